"""Parameter matching: every backbone lands within +-10% of the reference transformer."""

from __future__ import annotations

import pytest
from conftest import compose
from omegaconf import OmegaConf

from attnbench import registry
from attnbench.param_match import count_params, match_width, match_widths, reference_params
from attnbench.registry import ConfigError

BACKBONES = ("cnn", "rnn", "mlp", "window_mlp")
MATCH_TASKS = [t for t in ("sentiment", "pos") if t in registry.available("task")]


@pytest.fixture(scope="module")
def setups(tmp_path_factory):
    """task name -> (the preset's selected plugins, the set-up task), built once."""
    from attnbench.builders import selected

    out, found = tmp_path_factory.mktemp("match"), {}
    for name in MATCH_TASKS:
        cfg = compose(["experiment=compare_backbones", f"task={name}"], out)
        plugins = selected(cfg)
        task_name, params = plugins["task"]
        task = registry.build("task", task_name, data_dir=str(cfg.data_dir), **params)
        task.setup()
        found[name] = (cfg, plugins, task)
    return found


def lit_model_params(plugins, task) -> int:
    """The count summary.json reports: the LitModel built exactly as attnbench.train does."""
    from attnbench.builders import build_backbone
    from attnbench.lit import LitModel

    optim = {"lr": 1e-3, "weight_decay": 0.0, "warmup_steps": 0, "scheduler": "none"}
    model = LitModel(task, build_backbone(plugins, task), optim)
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("task_name", MATCH_TASKS)
@pytest.mark.parametrize("model", BACKBONES)
def test_matched_within_ten_percent(setups, task_name, model):
    cfg, plugins, task = setups[task_name]
    match = OmegaConf.to_container(cfg.match_params)
    target = lit_model_params({**plugins, "model": ("transformer", {})}, task)
    matched = match_widths({**plugins, "model": (model, {})}, task, **match)
    width = matched["model"][1]["d_model"]
    assert width != 128  # the default width would be off budget for every backbone here
    n = lit_model_params(matched, task)
    assert abs(n - target) <= 0.1 * target, (model, width, n, target)
    # and it is the closest width: one step either way is no nearer
    for other in (width - 1, width + 1):
        n_other = count_params({**plugins, "model": (model, {"d_model": other})}, task)
        assert abs(n_other - target) >= abs(n - target)


def test_meta_count_equals_real_count(setups):
    _, plugins, task = setups["sentiment"]
    for model in ("transformer", *BACKBONES):
        chosen = {**plugins, "model": (model, {"d_model": 24})}
        assert count_params(chosen, task) == lit_model_params(chosen, task)


def test_reference_model_is_built_as_the_reference(setups):
    _, plugins, task = setups["sentiment"]
    chosen = {**plugins, "model": ("transformer", {"d_model": 64, "dropout": 0.3})}
    reference = {"_name_": "transformer", "d_model": 32, "layers": 1}
    matched = match_widths(chosen, task, reference=reference)
    assert matched["model"] == ("transformer", {"d_model": 32, "layers": 1, "dropout": 0.3})
    assert count_params(matched, task) == reference_params(plugins, task, reference)


def test_width_respects_heads_when_matching_a_transformer(setups):
    _, plugins, task = setups["sentiment"]
    target = reference_params(plugins, task, {"_name_": "rnn", "d_model": 100})
    width, n = match_width({**plugins, "model": ("transformer", {"heads": 8})}, task, target)
    assert width % 8 == 0 and abs(n - target) <= 0.1 * target


def test_unreachable_budget_is_a_config_error(setups):
    _, plugins, task = setups["sentiment"]
    with pytest.raises(ConfigError, match="cannot reach 5 parameters within 10%"):
        match_width({**plugins, "model": ("rnn", {})}, task, target=5)


def test_unknown_reference_parameter_is_rejected(setups):
    _, plugins, task = setups["sentiment"]
    with pytest.raises(registry.PluginParameterError, match="no parameter 'hedas'"):
        match_widths(
            {**plugins, "model": ("cnn", {})}, task, reference={"_name_": "transformer", "hedas": 4}
        )


@pytest.mark.parametrize(
    "preset,task_name",
    [
        ("compare_backbones", "sentiment"),
        ("compare_sst2", "sentiment"),
        ("compare_digits", "image"),
        ("compare_pos", "pos"),
    ],
)
def test_every_compare_preset_matches_its_backbones(tmp_path, preset, task_name):
    """Each per-task comparison preset composes, and every backbone lands within 10% of the
    transformer run of the same sweep (which is built as the reference)."""
    from attnbench.builders import selected

    counts = {}
    for model in ("transformer", *BACKBONES):
        extra = [] if task_name == "image" else ["task.dataset=synthetic"]
        cfg = compose([f"experiment={preset}", f"model={model}", *extra], tmp_path)
        assert cfg.task._name_ == task_name
        plugins = selected(cfg)
        task_params = plugins["task"][1]
        task = registry.build("task", task_name, data_dir=str(cfg.data_dir), **task_params)
        task.setup()
        matched = match_widths(plugins, task, **OmegaConf.to_container(cfg.match_params))
        counts[model] = count_params(matched, task)
    target = counts["transformer"]
    assert all(abs(n - target) <= 0.1 * target for n in counts.values()), counts


@pytest.mark.parametrize("reference", [None, {}, {"d_model": 64}, {"_name_": None, "d_model": 64}])
def test_a_reference_without_a_model_name_is_a_one_line_config_error(setups, reference):
    """No model is assumed: the reference names its own, and the error says how to set it."""
    _, plugins, task = setups["sentiment"]
    with pytest.raises(ConfigError, match=r"match_params\.reference\._name_ is not set") as info:
        match_widths({**plugins, "model": ("cnn", {})}, task, reference=reference)
    message = str(info.value)
    assert "\n" not in message
    assert "match_params.reference._name_=NAME" in message
    with pytest.raises(ConfigError, match=r"match_params\.reference\._name_ is not set"):
        reference_params(plugins, task, reference)
