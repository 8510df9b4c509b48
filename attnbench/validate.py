"""The harness's own settings, checked before any data is loaded: one line per problem,
naming the key, the bad value and what is allowed.

Plugin parameters are checked by :func:`attnbench.config.plugin_params`; this covers the
rest of the composed config: top-level keys (a misspelled ``+attentoin=dot`` would otherwise
be ignored), ``seed``, ``optim.*`` and the ``trainer.*`` values Lightning would only reject
mid-setup with a traceback (or accept and train nonsense).
"""

from __future__ import annotations

import inspect
from typing import Any

from attnbench import registry
from attnbench.params import Range

SCHEDULERS = ("cosine", "none")  # attnbench.lit.make_optimizer
ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps", "tpu")
# Top-level keys a preset may set beyond those in conf/config.yaml and the config groups.
EXTRA_KEYS = ("match_params", "experiment")


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _fail(key: str, value: Any, allowed: str) -> None:
    raise registry.ConfigError(f"{key}={value!r} is not allowed; allowed: {allowed}")


def _check_int(key: str, value: Any, bounds: Range, *, none_ok: bool = False) -> None:
    if value is None and none_ok:
        return
    if not isinstance(value, int) or isinstance(value, bool) or value not in bounds:
        _fail(key, value, f"an integer {bounds.bounds}" + (" or null" if none_ok else ""))


def _check_float(key: str, value: Any, bounds: Range, *, none_ok: bool = False) -> None:
    if value is None and none_ok:
        return
    if not _number(value) or value not in bounds:
        _fail(key, value, f"a number {bounds.bounds}" + (" or null" if none_ok else ""))


def _check_keys(where: str, keys: Any, allowed: list[str]) -> None:
    for key in keys:
        if key not in allowed:
            raise registry.ConfigError(
                f"unknown config key '{where}{key}'; {registry.suggest(str(key), allowed)}"
            )


def _check_limit(key: str, value: Any) -> None:
    """Lightning's limit_*_batches: a fraction in [0, 1] or a whole number of batches."""
    if value is None:
        return
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return
    if isinstance(value, float) and 0.0 <= value <= 1.0:
        return
    _fail(key, value, "a fraction in [0, 1], a number of batches >= 0, or null")


def check_optim(optim: dict[str, Any]) -> None:
    _check_keys("optim.", optim, ["lr", "scheduler", "warmup_steps", "weight_decay"])
    _check_float("optim.lr", optim.get("lr"), Range(min=0, min_open=True))
    _check_float("optim.weight_decay", optim.get("weight_decay"), Range(min=0))
    _check_int("optim.warmup_steps", optim.get("warmup_steps"), Range(min=0))
    if optim.get("scheduler") not in SCHEDULERS:
        _fail("optim.scheduler", optim.get("scheduler"), f"one of {', '.join(SCHEDULERS)}")


def check_trainer(trainer: dict[str, Any]) -> None:
    import pytorch_lightning as pl  # a run imports it anyway; only its signature is read

    known = [p for p in inspect.signature(pl.Trainer).parameters if p != "self"]
    _check_keys("trainer.", [k for k in trainer if k != "_target_"], known)
    _check_int("trainer.max_epochs", trainer.get("max_epochs"), Range(min=-1), none_ok=True)
    if trainer.get("max_epochs") == 0:
        _fail("trainer.max_epochs", 0, "an integer >= 1 (or -1 for no limit)")
    _check_int("trainer.max_steps", trainer.get("max_steps", -1), Range(min=-1))
    _check_int(
        "trainer.log_every_n_steps", trainer.get("log_every_n_steps"), Range(min=1), none_ok=True
    )
    _check_int(
        "trainer.check_val_every_n_epoch",
        trainer.get("check_val_every_n_epoch"),
        Range(min=1),
        none_ok=True,
    )
    _check_int(
        "trainer.accumulate_grad_batches", trainer.get("accumulate_grad_batches", 1), Range(min=1)
    )
    _check_float(
        "trainer.gradient_clip_val", trainer.get("gradient_clip_val"), Range(min=0), none_ok=True
    )
    for split in ("train", "val", "test", "predict"):
        _check_limit(f"trainer.limit_{split}_batches", trainer.get(f"limit_{split}_batches"))
    fast = trainer.get("fast_dev_run", False)
    if not isinstance(fast, bool) and not (isinstance(fast, int) and fast >= 0):
        _fail("trainer.fast_dev_run", fast, "true, false or a number of batches >= 0")
    accelerator = trainer.get("accelerator", "auto")
    if isinstance(accelerator, str) and accelerator not in ACCELERATORS:
        _fail("trainer.accelerator", accelerator, f"one of {', '.join(ACCELERATORS)}")


def check_run_config(cfg: Any) -> None:
    """Every harness setting of a composed config; raises ConfigError (one line)."""
    from importlib import resources

    from omegaconf import OmegaConf

    base = OmegaConf.load(resources.files("attnbench.conf") / "config.yaml")
    groups = [p.name for p in resources.files("attnbench.conf").iterdir() if p.is_dir()]
    # conf/bench/ holds the benchmark's own config, not a run's
    known = sorted({*base, *groups, *registry.KINDS, *EXTRA_KEYS} - {"defaults", "hydra", "bench"})
    values = OmegaConf.to_container(cfg, resolve=False)
    values.pop("hydra", None)
    _check_keys("", values, known)
    seed = cfg.seed
    _check_int("seed", seed, Range(min=0))
    check_optim(OmegaConf.to_container(cfg.optim, resolve=True))
    check_trainer(OmegaConf.to_container(cfg.trainer, resolve=True))
    if cfg.optimized_metric is not None and not isinstance(cfg.optimized_metric, str):
        _fail("optimized_metric", cfg.optimized_metric, "a metric name such as val/acc, or null")


def check_metric_name(name: str | None, task: Any) -> None:
    """``optimized_metric`` must be one the task logs (checked once the task is built)."""
    if name is None:
        return
    logged = ["train/loss", "val/loss", "test/loss"]
    logged += [f"{stage}/{m}" for stage in ("val", "test") for m in task.metrics()]
    if name not in logged:
        raise registry.ConfigError(
            f"optimized_metric={name!r} is not a metric this task logs; "
            f"{registry.suggest(name, sorted(logged))}"
        )
