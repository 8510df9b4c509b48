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


def build_backbone(plugins: Plugins, task) -> nn.Module:
    """Build the model, handing it the attention / posenc factories it asks for, after
    refusing (one line, before training) any plugin that cannot serve this task."""
    model_name, model_params = plugins["model"]
    model_plugin = registry.get("model", model_name)
    model_plugin.cls.check_task(task)
    wants = {p.name for p in model_plugin.params}
    extra: dict[str, Any] = {"task": task} if "task" in wants else {}
    relative = False
    if "posenc" in wants:
        name, params = plugins["posenc"]
        relative = registry.get("posenc", name).cls.relative
        extra["posenc"] = registry.factory("posenc", name, **params)
    if "attention" in wants:
        name, params = plugins["attention"]
        registry.get("attention", name).cls.check_use(
            graph=task.gives_edges,
            padding=task.pads,
            relative_posenc=relative,
            causal=task.seq2seq,
            cross=task.seq2seq,
        )
        extra["attention"] = registry.factory("attention", name, **params)
    return registry.build("model", model_name, **model_params, **extra)
