"""Registry: discovery from every source, laziness, and every error a user can meet."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest
from conftest import cli

import attnbench
from attnbench import registry

CUSTOM = textwrap.dedent("""
    import attnbench
    from attnbench.nn.attention import Attention

    @attnbench.register("attention", "{name}")
    class Custom(Attention):
        def __init__(self, d_model, heads, gain: float = 1.0):
            super().__init__(d_model, heads)
            self.gain = gain

        def forward(self, query, key, value, *, ctx=None, need_weights=False):
            return value.mean(1, keepdim=True).expand_as(query) * self.gain, None
""")


def _python(code: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    # cwd away from the repository root, whose attnbench/ is the uninstalled source tree
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=300,
        cwd=tempfile.gettempdir(),
    )


@pytest.fixture
def fresh_registry(monkeypatch):
    """Rediscover with the test's environment; restore the normal registry afterwards."""
    yield lambda: registry.discover(force=True)
    monkeypatch.undo()
    registry.discover(force=True)


def test_import_is_lazy():
    code = (
        "import sys, attnbench; "
        "heavy = [m for m in sys.modules if m.split('.')[0] in "
        "('torch', 'pytorch_lightning', 'lightning', 'wandb', 'torchmetrics', 'hydra') "
        "or m.startswith('attnbench.plugins')]; print(heavy)"
    )
    result = _python(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_builtin_plugins_are_found_through_the_entry_point():
    plugin = registry.get("attention", "dot")
    assert plugin.source == "built-in"
    assert plugin.cls.__module__ == "attnbench.plugins.attention.dot"
    assert {"dot"} <= set(attnbench.available("attention"))
    assert set(attnbench.available()) == set(registry.KINDS)


def test_plugin_path_discovery(tmp_path, monkeypatch, fresh_registry):
    (tmp_path / "mine.py").write_text(CUSTOM.format(name="mine_path"))
    monkeypatch.setenv("ATTNBENCH_PLUGIN_PATH", os.pathsep.join(["/nonexistent", str(tmp_path)]))
    with pytest.warns(UserWarning, match="not a directory"):
        fresh_registry()
    plugin = registry.get("attention", "mine_path")
    assert plugin.source == f"path {tmp_path}"
    attn = attnbench.build("attention", "mine_path", d_model=8, heads=2, gain=2.0)
    assert attn.gain == 2.0


def test_entry_point_discovery(tmp_path):
    """A third-party distribution declares plugins in the `attnbench.plugins` group."""
    (tmp_path / "thirdparty_attn.py").write_text(CUSTOM.format(name="from_ep"))
    dist = tmp_path / "thirdparty-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: thirdparty\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[attnbench.plugins]\nmine = thirdparty_attn\n")
    code = (
        "import attnbench; p = attnbench.get('attention', 'from_ep'); "
        "print(p.source); print(attnbench.get('attention', 'dot').source)"
    )
    result = _python(code, {"PYTHONPATH": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[:2] == ["entry point thirdparty:mine", "built-in"]


def test_unknown_name_suggests_close_matches():
    with pytest.raises(registry.UnknownPluginError) as err:
        attnbench.get("attention", "dto")
    message = str(err.value)
    assert "\n" not in message
    assert "unknown attention 'dto'" in message and "did you mean 'dot'" in message
    assert "available:" in message and "dot" in message.split("available:")[1]


def test_unknown_kind():
    with pytest.raises(registry.UnknownPluginError, match="kinds are: attention"):
        attnbench.available("atention")


def test_unknown_name_on_the_command_line_exits_2_without_traceback():
    result = cli("attention=dto", "trainer.fast_dev_run=true")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "did you mean 'dot'" in lines[0], result.stderr


def test_duplicate_name_names_both_sources(tmp_path, monkeypatch, fresh_registry):
    with pytest.raises(registry.DuplicatePluginError, match="built-in.*code"):
        attnbench.register("attention", "dot")(type("Again", (attnbench.Attention,), {}))
    (tmp_path / "dup.py").write_text(CUSTOM.format(name="dot"))
    monkeypatch.setenv("ATTNBENCH_PLUGIN_PATH", str(tmp_path))
    with pytest.warns(UserWarning, match="duplicate attention 'dot'"):
        fresh_registry()
    with pytest.raises(registry.DuplicatePluginError) as err:
        attnbench.get("attention", "dot")
    assert "built-in" in str(err.value) and f"path {tmp_path}" in str(err.value)


def test_broken_plugin_warns_and_the_rest_work(tmp_path, monkeypatch, fresh_registry):
    (tmp_path / "broken_attn.py").write_text("raise RuntimeError('boom at import')\n")
    (tmp_path / "fine.py").write_text(CUSTOM.format(name="fine"))
    monkeypatch.setenv("ATTNBENCH_PLUGIN_PATH", str(tmp_path))
    with pytest.warns(UserWarning, match=r"broken_attn\.py.*path .*RuntimeError: boom at import"):
        fresh_registry()
    assert "fine" in attnbench.available("attention")
    assert "dot" in attnbench.available("attention")
    [broken] = registry.broken()
    assert broken.error == "RuntimeError: boom at import"
    with pytest.raises(registry.UnknownPluginError, match="is broken: RuntimeError"):
        attnbench.get("attention", "broken_attn")


def test_list_shows_parameters_sources_and_broken_plugins(tmp_path):
    (tmp_path / "broken_attn.py").write_text("raise RuntimeError('boom at import')\n")
    (tmp_path / "mine.py").write_text(CUSTOM.format(name="mine"))
    result = cli("list", env={"ATTNBENCH_PLUGIN_PATH": str(tmp_path), "COLUMNS": "200"})
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "dot" in out and "dropout=0.0" in out and "built-in" in out
    assert "mine" in out and "gain=1.0" in out and f"path {tmp_path}" in out
    assert "broken" in out and "RuntimeError: boom at import" in out
    only = cli("list", "posenc", "sin*", env={"COLUMNS": "200"})
    assert "sinusoidal" in only.stdout and "dot" not in only.stdout and "learned" not in only.stdout


def test_list_does_not_import_the_training_stack():
    code = (
        "import sys; from attnbench.cli import main; main(['list']); "
        "print([m for m in ('pytorch_lightning', 'torchmetrics', 'wandb') if m in sys.modules],"
        " file=sys.stderr)"
    )
    result = _python(code)
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip().splitlines()[-1] == "[]"


def test_build_rejects_unknown_and_missing_parameters():
    with pytest.raises(registry.PluginParameterError, match="no parameter 'dropuot'.*'dropout'"):
        attnbench.build("attention", "dot", d_model=8, heads=2, dropuot=0.1)
    with pytest.raises(registry.PluginParameterError, match="needs d_model, heads"):
        attnbench.build("attention", "dot")


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("attention.dropuot=0.1", "no parameter 'dropuot'; did you mean 'dropout'?"),
        ("model.layer=3", "model 'transformer' has no parameter 'layer'; did you mean 'layers'?"),
        ("attention.dropout=abc", "attention.dropout='abc' has the wrong type"),
        ("model.heads=5", "d_model=128 is not divisible by heads=5"),
    ],
)
def test_bad_parameter_is_rejected_before_training(override, expected, tmp_path):
    result = cli(override, f"hydra.run.dir={tmp_path}")
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert expected in result.stderr
    assert not (tmp_path / "checkpoints").exists()
    failure = json.loads((tmp_path / "summary.json").read_text())  # documents the failure
    assert failure["status"] == "failed" and expected in failure["reason"]
    assert failure["metrics"] == {}


def test_summary_is_json_and_not_written_on_failure(tmp_path):
    from conftest import fast_dev_run

    summary = fast_dev_run([], tmp_path)
    on_disk = json.loads((tmp_path / "summary.json").read_text())
    assert on_disk["metrics"] == pytest.approx(summary["metrics"])
    assert Path(tmp_path / "summary.json.tmp").exists() is False


PLAIN_MODULE = textwrap.dedent("""
    import torch
    import attnbench

    @attnbench.register("attention", "plain")
    class PlainAttention(torch.nn.Module):  # follows the call contract, not the base class
        def forward(self, query, key, value, *, ctx=None, need_weights=False):
            return value, None
""")


@pytest.mark.parametrize(
    ("kind", "base"),
    [
        ("attention", "Attention"),
        ("posenc", "PositionalEncoding"),
        ("model", "Backbone"),
        ("task", "Task"),
    ],
)
def test_a_class_that_does_not_subclass_its_base_is_refused_at_registration(kind, base):
    class NotAPlugin:
        pass

    with pytest.raises(registry.PluginContractError) as err:
        attnbench.register(kind, "not_a_plugin")(NotAPlugin)
    message = str(err.value)
    assert "\n" not in message and "NotAPlugin" in message and f"attnbench.{base}" in message
    assert __file__ in message  # the file that declares it
    assert "not_a_plugin" not in attnbench.available(kind)


def test_a_plain_module_plugin_is_listed_as_broken_and_nothing_else_is_affected(tmp_path):
    (tmp_path / "plain.py").write_text(PLAIN_MODULE)
    (tmp_path / "mine.py").write_text(CUSTOM.format(name="mine"))
    env = {"ATTNBENCH_PLUGIN_PATH": str(tmp_path), "COLUMNS": "300"}
    listed = cli("list", env=env)
    assert listed.returncode == 0, listed.stderr
    assert "Traceback" not in listed.stdout + listed.stderr
    [line] = [ln for ln in listed.stdout.splitlines() if "plain.py" in ln]
    assert "PlainAttention" in line and "attnbench.Attention" in line
    assert "mine" in listed.stdout and "dot" in listed.stdout
    used = cli("attention=plain", "trainer.fast_dev_run=true", env=env)
    assert used.returncode == 2 and "Traceback" not in used.stderr
    assert "unknown attention 'plain'" in used.stderr and "attnbench.Attention" in used.stderr


def test_base_classes_are_exported_lazily():
    code = (
        "import sys, attnbench; before = 'torch' in sys.modules; "
        "names = [attnbench.Attention, attnbench.ScoreAttention, attnbench.PositionalEncoding, "
        "attnbench.Backbone, attnbench.Task, attnbench.Ctx]; "
        "print(before, all(isinstance(n, type) for n in names))"
    )
    result = _python(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "True"]
