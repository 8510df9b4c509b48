"""Build the plugins a config selects: the harness's one builder, free of Lightning, so the
parameter matcher, the benchmarks and the conformance checker build models exactly as a run
does."""

from __future__ import annotations

from typing import Any

from torch import nn

from attnbench import registry
from attnbench.config import plugin_params

Plugins = dict[str, tuple[str, dict[str, Any]]]  # kind -> (name, checked params)


def selected(cfg) -> Plugins:
    """Every plugin the config selects, checked against its signature (before training)."""
    return {kind: plugin_params(kind, cfg[kind]) for kind in registry.KINDS}


def _takes(plugins: Plugins) -> set[str]:
    """The harness-supplied parameters the selected model asks for (attention, posenc, task)."""
    return {p.name for p in registry.get("model", plugins["model"][0]).params}


def refuse_unservable(plugins: Plugins, task) -> None:
    """One line, before any data is loaded, when a selected plugin cannot serve the task:
    the backbone's and the attention's declared capabilities against what the task's
    batches hold (class-level declarations: the task need not be set up)."""
    model_name, model_params = plugins["model"]
    model = registry.get("model", model_name).cls
    model.check_task(task)
    wants = _takes(plugins)
    uses = model.attention_uses(task, model_params) if "attention" in wants else None
    if uses is None:  # the backbone will not call the attention plugin on this task
        return
    relative = "posenc" in wants and registry.get("posenc", plugins["posenc"][0]).cls.relative
    registry.get("attention", plugins["attention"][0]).cls.check_use(
        **uses, relative_posenc=relative
    )


def check_positions(plugins: Plugins, task) -> None:
    """A positional encoding with a fixed table (a ``max_len`` parameter) must cover the
    task's longest sequence: one line saying what to set, before training (the task is set
    up). Unknown lengths are not checked here; the encoding still refuses at its lookup."""
    if "posenc" not in _takes(plugins):
        return
    name, params = plugins["posenc"]
    limit = params.get("max_len", registry.get("posenc", name).options.get("max_len"))
    longest = task.max_positions()
    if isinstance(limit, int) and longest is not None and longest > limit:
        raise registry.ConfigError(
            f"posenc.max_len={limit} is shorter than this task's longest sequence "
            f"({longest} positions); set posenc.max_len={longest} or more"
        )


def build_backbone(plugins: Plugins, task) -> nn.Module:
    """Build the model, handing it the attention / posenc factories it asks for, after
    refusing (one line, before training) any plugin that cannot serve this task."""
    refuse_unservable(plugins, task)
    model_name, model_params = plugins["model"]
    wants = _takes(plugins)
    extra: dict[str, Any] = {"task": task} if "task" in wants else {}
    if "posenc" in wants:
        name, params = plugins["posenc"]
        extra["posenc"] = registry.factory("posenc", name, **params)
    if "attention" in wants:
        name, params = plugins["attention"]
        extra["attention"] = registry.factory("attention", name, **params)
    return registry.build("model", model_name, **model_params, **extra)
