"""Parameter matching: pick a backbone's width so the whole model (embedder + backbone +
head, as attnbench.lit.LitModel holds it) has as many parameters as a reference model,
within a tolerance (Long Range Arena compares models at +-10% of one budget).

Used by the harness when the config has ``match_params`` (conf/experiment/compare_backbones):
the selected model's ``width`` parameter (d_model) is replaced by the matched one.
Models are built on the meta device: counting costs no memory and almost no time.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from attnbench import registry
from attnbench.config import NAME_KEY, plugin_params
from attnbench.registry import ConfigError

Plugins = dict[str, tuple[str, dict[str, Any]]]  # kind -> (name, params), as builders.selected


def _count(modules: list[nn.Module]) -> int:
    """Parameters of all modules, shared ones once (as LitModel.parameters() counts them)."""
    return sum(p.numel() for p in nn.ModuleList(modules).parameters())


def count_params(plugins: Plugins, task) -> int:
    """Total parameters of the model the harness would build for these plugins and task."""
    from attnbench.builders import build_backbone

    def build() -> int:
        backbone = build_backbone(plugins, task)
        d = backbone.d_model
        return _count([task.build_embedder(d), backbone, task.build_head(d)])

    try:
        with torch.device("meta"):  # shapes only, no allocation
            return build()
    except ConfigError:
        raise
    except Exception:  # a plugin doing real arithmetic at construction: count on the CPU
        return build()


def _with_width(plugins: Plugins, width_key: str, width: int) -> Plugins:
    name, params = plugins["model"]
    return {**plugins, "model": (name, {**params, width_key: width})}


def _step(plugins: Plugins) -> int:
    """Widths must be multiples of the head count for models that split into heads."""
    name, params = plugins["model"]
    options = registry.get("model", name).options
    return int(params.get("heads", options.get("heads", 1)) or 1) if "heads" in options else 1


def match_width(
    plugins: Plugins,
    task,
    target: int,
    tolerance: float = 0.1,
    width_key: str = "d_model",
    max_width: int = 1 << 14,
) -> tuple[int, int]:
    """(width, params) of the selected model whose total count is closest to ``target``.

    Assumes the count grows with the width (true of every built-in backbone); binary
    search over multiples of the step. Raises ConfigError when even the closest width is
    outside ``target * (1 +- tolerance)``.
    """
    name = plugins["model"][0]
    if width_key not in registry.get("model", name).options:
        raise ConfigError(
            f"match_params: model {name!r} has no width parameter "
            f"{width_key!r}; set match_params.width_key"
        )
    step = _step(plugins)
    counts: dict[int, int] = {}

    def count(k: int) -> int:  # parameters at width k * step
        if k not in counts:
            counts[k] = count_params(_with_width(plugins, width_key, k * step), task)
        return counts[k]

    lo, hi = 1, 1  # find hi with count(hi) >= target, then bisect to count(lo) < target
    while count(hi) < target and hi * step < max_width:
        lo, hi = hi, hi * 2
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if count(mid) < target else (lo, mid)
    best = min((lo, hi), key=lambda k: abs(count(k) - target))
    width, n = best * step, count(best)
    if abs(n - target) > tolerance * target:
        raise ConfigError(
            f"match_params: model {name!r} cannot reach {target:,} parameters "
            f"within {tolerance:.0%} (closest: {n:,} at {width_key}={width}); "
            f"change its depth (model.layers) or the reference"
        )
    return width, n


def _split_reference(reference: dict[str, Any] | None) -> tuple[str, dict[str, Any]]:
    """(model name, its parameters) of ``match_params.reference``; the name is required."""
    params = dict(reference or {})
    name = params.pop("_name_", None)
    if not name:
        raise ConfigError(
            "match_params.reference._name_ is not set: name the model the others are matched "
            "to, e.g. match_params.reference._name_=NAME (models: "
            f"{', '.join(registry.available('model'))})"
        )
    return name, params


def check_reference(reference: dict[str, Any] | None) -> tuple[str, dict[str, Any]]:
    """The reference model's name and parameters, checked like any model's (before data
    is loaded: the harness calls this first)."""
    name, params = _split_reference(reference)
    return plugin_params("model", {NAME_KEY: name, **params})


def reference_params(plugins: Plugins, task, reference: dict[str, Any]) -> int:
    """Parameter count of the reference model (``{_name_: <model>, d_model: 128, ...}``)
    with the selected attention and positional encoding."""
    name, params = check_reference(reference)
    return count_params({**plugins, "model": (name, params)}, task)


def match_widths(
    plugins: Plugins,
    task,
    reference: dict[str, Any] | None = None,
    tolerance: float = 0.1,
    width_key: str = "d_model",
) -> Plugins:
    """The selected plugins with the model's width set to match the reference's parameter
    count. The reference model itself (same name) is built as the reference: its
    ``match_params.reference`` parameters replace the model's own. ``reference`` must name
    its model (``_name_``): a ConfigError says how otherwise."""
    reference_name, shape = check_reference(reference)
    name = plugins["model"][0]
    if name == reference_name:
        return {**plugins, "model": (name, {**plugins["model"][1], **shape})}
    target = reference_params(plugins, task, reference)
    width, _ = match_width(plugins, task, target, tolerance, width_key)
    return _with_width(plugins, width_key, width)
