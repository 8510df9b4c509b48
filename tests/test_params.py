"""Plugin parameters typed from constructor annotations and ranges: every bad value is
refused in one line naming the parameter and what is allowed, before any data is loaded."""

from __future__ import annotations

import json
import textwrap
from collections.abc import Callable
from typing import Annotated, Any, Literal

import pytest
from conftest import cli

from attnbench import registry
from attnbench.config import compose_plain, plugin_node, plugin_params
from attnbench.nn.attention import Attention
from attnbench.params import Range, param_specs


class Knobs(Attention):
    """One parameter of each annotation kind (strings here: the module uses
    ``from __future__ import annotations``, as plugins do)."""

    def __init__(
        self,
        d_model: int,
        heads: int,
        size: int,
        rate: float = 0.5,
        flag: bool = True,
        label: str = "a",
        norm: Literal["pre", "post"] = "pre",
        scale: float | None = None,
        window: Annotated[int, Range(min=2, max=6)] = 3,
        layers: int = 2,
        dropout: float = 0.1,
    ):
        super().__init__(d_model, heads)


class Odd(Attention):
    """Annotations the checker cannot or need not understand."""

    def __init__(
        self,
        d_model: int,
        heads: int,
        count: NotDefinedAnywhere = 3,  # noqa: F821  (unresolvable: typed by its default)
        fn: Callable[..., int] | None = None,
        anything: Any = "x",
    ):
        super().__init__(d_model, heads)


@pytest.fixture(scope="module", autouse=True)
def test_plugins():
    """A fresh registry with the two plugins above; the normal one restored afterwards."""
    registry.discover(force=True)
    registry.register("attention", "knobs")(Knobs)
    registry.register("attention", "odd")(Odd)
    yield
    registry.discover(force=True)


def _check(**params):
    return plugin_params("attention", {"_name_": "knobs", "size": 3, **params})


def test_good_values_pass():
    name, params = _check(
        rate=1,
        flag=False,
        label="b",
        norm="post",
        scale=0.25,
        window=6,
        layers=1,
        dropout=0,
    )
    assert name == "knobs"
    assert params == {
        "size": 3,
        "rate": 1.0,
        "flag": False,
        "label": "b",
        "norm": "post",
        "scale": 0.25,
        "window": 6,
        "layers": 1,
        "dropout": 0.0,
    }
    assert type(params["rate"]) is float  # an int given for a float reaches the plugin as one
    assert _check(scale=None)[1]["scale"] is None
    assert _check(window=2)[1]["window"] == 2  # both bounds of [2, 6] are inside


TYPE, RANGE, CHOICE = "has the wrong type", "is out of range", "is not one of the choices"


@pytest.mark.parametrize(
    ("key", "value", "shown", "reason", "allowed"),
    [
        ("size", "abc", "'abc'", TYPE, "an int"),
        ("size", True, "true", TYPE, "an int"),  # a bool is never an int
        ("size", 1.5, "1.5", TYPE, "an int"),
        ("rate", "abc", "'abc'", TYPE, "a float"),
        ("rate", False, "false", TYPE, "a float"),
        ("rate", None, "null", TYPE, "a float"),
        ("flag", 1, "1", TYPE, "true or false"),
        ("label", 3, "3", TYPE, "a string"),
        ("norm", "mid", "'mid'", CHOICE, "one of 'pre', 'post'"),
        ("scale", "abc", "'abc'", TYPE, "a float or null"),
        ("window", 1, "1", RANGE, "an int in [2, 6]"),
        ("window", 7, "7", RANGE, "an int in [2, 6]"),
        ("layers", 0, "0", RANGE, "an int >= 1"),  # the convention for `layers`
        ("dropout", 1.0, "1.0", RANGE, "a float in [0, 1)"),  # the convention for `dropout`
        ("dropout", -0.1, "-0.1", RANGE, "a float in [0, 1)"),
    ],
)
def test_bad_value_names_parameter_and_allowed_values(key, value, shown, reason, allowed):
    with pytest.raises(registry.AttnbenchError) as err:
        _check(**{key: value})
    assert str(err.value) == (
        f"attention.{key}={shown} {reason} for attention 'knobs'; allowed: {allowed}"
    )


def test_missing_required_parameter_says_how_to_set_it():
    with pytest.raises(registry.PluginParameterError) as err:
        plugin_params("attention", {"_name_": "knobs"})
    assert str(err.value) == (
        "attention 'knobs' needs parameter 'size' (int); set it with attention.size=VALUE"
    )


def test_required_parameter_is_settable_through_hydra():
    node = plugin_node(registry.get("attention", "knobs"))
    assert node["size"] == "???"
    assert "d_model" not in node and "heads" not in node  # the harness passes those

    cfg = compose_plain(["attention=knobs", "attention.size=4", "attention.scale=0.5"])
    assert plugin_params("attention", cfg.attention)[1]["size"] == 4

    missing = compose_plain(["attention=knobs"])
    with pytest.raises(registry.PluginParameterError, match=r"attention\.size=VALUE"):
        plugin_params("attention", missing.attention)

    typed = compose_plain(["attention=knobs", "attention.size=abc"])  # Hydra parses a str
    with pytest.raises(registry.ConfigError, match=r"attention\.size='abc' has the wrong type"):
        plugin_params("attention", typed.attention)


def test_unknown_and_harness_parameters():
    with pytest.raises(registry.PluginParameterError, match="did you mean 'size'"):
        _check(sise=3)
    with pytest.raises(registry.PluginParameterError, match="set model.heads instead"):
        _check(heads=2)


def test_annotations_it_cannot_check_do_not_crash():
    specs = {s.name: s for s in param_specs(registry.get("attention", "odd"))}
    assert specs["count"].type is int  # the default's type stands in for the annotation
    with pytest.raises(registry.ConfigError) as err:
        plugin_params("attention", {"_name_": "odd", "count": "abc"})
    assert str(err.value).endswith(
        "attention.count='abc' has the wrong type for attention 'odd'; allowed: an int"
    )
    _, params = plugin_params(
        "attention", {"_name_": "odd", "count": 5, "fn": "anything", "anything": [1, 2]}
    )
    assert params == {"count": 5, "fn": "anything", "anything": [1, 2]}


def test_literal_choices_and_required_in_specs():
    specs = {s.name: s for s in param_specs(registry.get("attention", "knobs"))}
    assert specs["norm"].choices == ("pre", "post")
    assert specs["size"].required and not specs["size"].supplied
    assert specs["heads"].supplied
    assert specs["scale"].nullable and not specs["rate"].nullable
    assert specs["window"].range == Range(min=2, max=6)


def test_range_bounds_and_descriptions():
    assert Range(min=0).describe() == "must be >= 0"
    assert Range(min=0, max=1, max_open=True).describe() == "must be in [0, 1)"
    assert Range(min=1, min_open=True).describe() == "must be > 1"
    assert Range(max=0.5).describe() == "must be <= 0.5"
    half_open = Range(min=0, max=1, max_open=True)
    assert 0 in half_open and 0.999 in half_open
    assert 1 not in half_open and -0.001 not in half_open
    assert 1 not in Range(min=1, min_open=True) and 1.001 in Range(min=1, min_open=True)


def test_builtin_defaults_pass_their_own_checks():
    checked = 0
    for plugin in registry.plugins():
        if plugin.source != "built-in":
            continue
        node = plugin_node(plugin)
        name, params = plugin_params(plugin.kind, node)
        assert name == plugin.name
        assert params == {k: v for k, v in node.items() if k != "_name_"}
        checked += 1
    assert checked >= 10


REQUIRED_PLUGIN = textwrap.dedent("""
    from attnbench.nn.attention import Attention
    import attnbench

    @attnbench.register("attention", "needs_size")
    class NeedsSize(Attention):
        def __init__(self, d_model, heads, size: int):
            super().__init__(d_model, heads)
""")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["model.heads=0"],
            "model.heads=0 is out of range for model 'transformer'; allowed: an int >= 1",
        ),
        (
            ["attention.dropout=1.5"],
            "attention.dropout=1.5 is out of range for attention 'dot'; allowed: a float in [0, 1)",
        ),
        (
            ["attention=needs_size"],
            "attention 'needs_size' needs parameter 'size' (int); set it with attention.size=VALUE",
        ),
    ],
)
def test_cli_refuses_bad_parameter_before_any_data(tmp_path, args, message):
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "needs_size.py").write_text(REQUIRED_PLUGIN)
    run_dir = tmp_path / "run"
    result = cli(
        *args,
        f"hydra.run.dir={run_dir}",
        "trainer.fast_dev_run=true",
        "logger=none",
        env={"ATTNBENCH_PLUGIN_PATH": str(plugins), "ATTNBENCH_DATA": str(tmp_path / "data")},
        timeout=300,
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [f"attnbench: error: {message}"]
    # No run: no checkpoint, no data fetched; a summary.json, if any, only records the failure.
    assert not list(tmp_path.rglob("*.ckpt"))
    assert not (tmp_path / "data").exists()
    for path in tmp_path.rglob("summary.json"):
        summary = json.loads(path.read_text())
        assert summary.get("status") == "failed" and not summary.get("metrics"), summary
