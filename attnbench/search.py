"""Hyperparameter search helpers (pure, no Optuna import): which way a metric should go, a
Hydra sweep override as an Optuna search space entry, and the best trial as a config that
reruns it. The sweeper itself is :mod:`attnbench.optuna_sweeper`."""

from __future__ import annotations

import math
from typing import Any

from attnbench import registry

# Metric leaf names (after "val/", "test/") and which way they should go. torchmetrics knows
# this per metric (higher_is_better), but only once the task has built its metrics, after its
# data loaded; a study needs its direction before the first trial.
MAXIMISE = ("acc", "accuracy", "f1", "bleu", "exact", "auroc", "auc", "precision", "recall")
MINIMISE = ("loss", "mse", "mae", "rmse", "nll", "perplexity", "ppl", "error", "cer", "wer")
DIRECTIONS = ("maximize", "minimize")


def metric_direction(metric: str, task_monitor: str | None = None, task_mode: str | None = None):
    """'maximize' or 'minimize' for a metric name such as val/acc or val/loss.

    The task's own declaration wins for the metric it monitors (task.monitor, task.mode); other
    names are read from their last part (acc, f1, bleu up; loss, mse down). A name that says
    neither is refused: guessing would silently optimise the wrong way."""
    if task_monitor is not None and metric == task_monitor and task_mode in ("max", "min"):
        return "maximize" if task_mode == "max" else "minimize"
    leaf = metric.rsplit("/", 1)[-1].lower()
    stem = leaf.split("_")[0]  # acc_best, loss_epoch ...
    if leaf in MINIMISE or stem in MINIMISE or leaf.endswith("loss"):
        return "minimize"
    if leaf in MAXIMISE or stem in MAXIMISE:
        return "maximize"
    raise registry.ConfigError(
        f"cannot tell whether optimized_metric={metric!r} should go up or down; "
        "set hydra.sweeper.direction=maximize or minimize"
    )


def study_direction(metric: str, asked: str | None, task_monitor=None, task_mode=None) -> str:
    """The study's direction: derived from the metric; an explicit one must agree with it."""
    if asked is not None and asked not in DIRECTIONS:
        raise registry.ConfigError(
            f"hydra.sweeper.direction={asked!r}; allowed: maximize, minimize or null (derived)"
        )
    try:
        derived = metric_direction(metric, task_monitor, task_mode)
    except registry.ConfigError:
        if asked is None:
            raise
        return asked  # a metric we cannot read: the user's word is all there is
    if asked is not None and asked != derived:
        raise registry.ConfigError(
            f"hydra.sweeper.direction={asked} contradicts optimized_metric={metric!r}, which "
            f"should {'go up' if derived == 'maximize' else 'go down'}; drop the direction "
            "(it is derived from the metric)"
        )
    return derived


def distribution(override: Any) -> Any:
    """A parsed Hydra sweep override as an Optuna distribution:
    choice(a,b) / a,b -> categorical; range(1,5) -> integers 1..4 (floats: categorical);
    interval(a,b) -> float (tag(log, ...) for a log scale; tag(int, ...) or int bounds ->
    integers)."""
    from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, RangeSweep
    from optuna.distributions import (
        CategoricalDistribution,
        FloatDistribution,
        IntDistribution,
    )

    sweep = override.value()
    key = override.get_key_element()
    if isinstance(sweep, ChoiceSweep):
        return CategoricalDistribution(list(override.sweep_iterator()))
    if isinstance(sweep, RangeSweep):
        values = list(override.sweep_iterator())
        if all(isinstance(v, int) for v in values) and len(values) > 1:
            return IntDistribution(values[0], values[-1], step=values[1] - values[0])
        return CategoricalDistribution(values)
    if isinstance(sweep, IntervalSweep):
        log = "log" in sweep.tags
        start, end = sweep.start, sweep.end
        if "int" in sweep.tags or (isinstance(start, int) and isinstance(end, int)):
            return IntDistribution(int(start), int(end), log=log)
        return FloatDistribution(float(start), float(end), log=log)
    raise registry.ConfigError(f"{key}: cannot search over {override.get_value_string()}")


def override_value(value: Any) -> str:
    """A sampled value as a Hydra command-line value."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        if not math.isfinite(value):
            raise registry.ConfigError(f"sampled a non-finite value {value}")
        return repr(value)
    return str(value)


def best_config(overrides: list[str], choices: dict[str, Any]) -> dict[str, Any]:
    """The best trial as a primary config extending attnbench's own:
    ``attnbench --config-dir <sweep dir> --config-name best`` composes what the trial ran.

    ``choices`` are the sweep's config-group choices (hydra.runtime.choices, after the
    hparams_search preset's overrides): each becomes a defaults-list override, so the rerun
    selects the same plugins and presets without the search preset itself. The trial's value
    overrides (optim.lr=0.003) become the body, applied last as on the command line."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import OmegaConf

    groups = {
        group: choice
        for group, choice in choices.items()
        if choice is not None and not group.startswith("hydra/") and group != "hparams_search"
    }
    values = []
    for parsed in OverridesParser.create().parse_overrides(overrides):
        key = parsed.key_or_group
        if parsed.is_delete():
            raise registry.ConfigError(
                f"best.yaml cannot express the deletion {parsed.input_line!r}; "
                "rerun the best trial with its overrides instead"
            )
        if key.startswith("hydra") or key == "hparams_search":
            continue
        value = parsed.get_value_element_as_str()
        if key in choices:
            groups[key] = value
        else:
            values.append(f"{key}={value}")
    defaults: list[Any] = ["config", *({f"override {g}": c} for g, c in groups.items())]
    body = OmegaConf.to_container(OmegaConf.from_dotlist(values)) if values else {}
    return {"defaults": [*defaults, "_self_"], **body}
