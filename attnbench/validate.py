"""The harness's own settings, checked before any data is loaded: one line per problem,
naming the key, the bad value and what is allowed.

Plugin parameters are checked by :func:`attnbench.config.plugin_params`; this covers the
rest of the composed config: top-level keys (a misspelled ``+attentoin=dot`` would otherwise
be ignored), ``seed``, ``optim.*`` and the ``trainer.*`` values Lightning would only reject
mid-setup with a traceback (or accept and train nonsense).
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import re
import typing
from collections.abc import Iterator
from typing import Any

from attnbench import registry
from attnbench.params import Range

SCHEDULERS = ("cosine", "none")  # attnbench.lit.make_optimizer
ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps", "tpu")
# Top-level keys a preset may set beyond those in conf/config.yaml and the config groups.
EXTRA_KEYS = ("match_params", "experiment")
CLIP_ALGORITHMS = ("norm", "value")
# Lightning's own device strings: "auto", "-1" (all), "2" (a count), "0,1" (indices)
_DEVICES = re.compile(r"auto|-1|\d+|\d+(\s*,\s*\d+)+,?|\d+,")


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


def _literals(annotation: Any) -> list[Any]:
    """The values a (nested) ``Literal`` in an annotation allows: Trainer's precision."""
    if typing.get_origin(annotation) is typing.Literal:
        return list(typing.get_args(annotation))
    return [v for arg in typing.get_args(annotation) for v in _literals(arg)]


def _is_flag(annotation: Any) -> bool:
    """``bool`` or ``Optional[bool]``: a switch that takes true/false only."""
    args = set(typing.get_args(annotation)) - {type(None)}
    return annotation is bool or args == {bool}


def _check_devices(devices: Any) -> None:
    if (
        isinstance(devices, int)
        and not isinstance(devices, bool)
        and (devices >= 1 or devices == -1)
    ):
        return
    if isinstance(devices, str) and _DEVICES.fullmatch(devices.strip()):
        return
    if (
        isinstance(devices, list)
        and devices
        and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in devices)
    ):
        return
    _fail(
        "trainer.devices",
        devices,
        "a number of devices >= 1, -1 (all), auto, or device indices such as [0,1] or '0,1'",
    )


def _check_trainer_choices(trainer: dict[str, Any], signature: inspect.Signature) -> None:
    """Values Lightning takes from a fixed set, checked against Trainer's own annotations
    (a wrong one is otherwise a multi-line instantiation error, or accepted and ignored)."""
    from pytorch_lightning.strategies import StrategyRegistry

    params = signature.parameters
    for key, value in trainer.items():
        if key in params and _is_flag(params[key].annotation) and not isinstance(value, bool):
            optional = type(None) in typing.get_args(params[key].annotation)
            if not (value is None and optional):
                _fail(f"trainer.{key}", value, "true or false" + (" or null" if optional else ""))
    precisions = _literals(params["precision"].annotation)
    if trainer.get("precision") is not None and trainer["precision"] not in precisions:
        shown = ", ".join(dict.fromkeys(str(p) for p in precisions))
        _fail("trainer.precision", trainer["precision"], f"one of {shown}")
    deterministic = trainer.get("deterministic")
    if not (deterministic is None or isinstance(deterministic, bool) or deterministic == "warn"):
        _fail("trainer.deterministic", deterministic, "true, false, warn or null")
    if "devices" in trainer:
        _check_devices(trainer["devices"])
    strategy = trainer.get("strategy", "auto")
    strategies = ["auto", *StrategyRegistry.available_strategies()]
    if isinstance(strategy, str) and strategy not in strategies:
        raise registry.ConfigError(
            f"trainer.strategy={strategy!r} is not allowed; "
            f"{registry.suggest(strategy, strategies).replace('available', 'allowed')}"
        )
    algorithm = trainer.get("gradient_clip_algorithm")
    if algorithm is not None and algorithm not in CLIP_ALGORITHMS:
        _fail("trainer.gradient_clip_algorithm", algorithm, "norm, value or null")
    _check_int("trainer.num_nodes", trainer.get("num_nodes", 1), Range(min=1))
    _check_int(
        "trainer.num_sanity_val_steps",
        trainer.get("num_sanity_val_steps"),
        Range(min=-1),
        none_ok=True,
    )
    for key in ("min_epochs", "min_steps"):
        _check_int(f"trainer.{key}", trainer.get(key), Range(min=0), none_ok=True)


def check_trainer(trainer: dict[str, Any]) -> None:
    import pytorch_lightning as pl  # a run imports it anyway; only its signature is read

    signature = inspect.signature(pl.Trainer)
    known = [p for p in signature.parameters if p != "self"]
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
    _check_trainer_choices(trainer, signature)
    _check_accelerator_here(accelerator, trainer.get("devices", "auto"))


def _check_accelerator_here(accelerator: Any, devices: Any) -> None:
    """An accelerator this machine lacks, or more GPUs than it has: Lightning would refuse
    only once the data is loaded, in a multi-line instantiation error."""
    from pytorch_lightning.accelerators import CUDAAccelerator, MPSAccelerator, XLAAccelerator

    present = {
        "cuda": CUDAAccelerator.is_available,
        "gpu": lambda: CUDAAccelerator.is_available() or MPSAccelerator.is_available(),
        "mps": MPSAccelerator.is_available,
        "tpu": XLAAccelerator.is_available,
    }
    if accelerator in present and not present[accelerator]():
        raise registry.ConfigError(
            f"trainer.accelerator={accelerator}: this machine has no {accelerator.upper()} "
            "that torch can use; use trainer=cpu (or trainer.accelerator=auto, which picks "
            "an accelerator when there is one)"
        )
    if accelerator in ("cuda", "gpu") and CUDAAccelerator.is_available():
        count = CUDAAccelerator.auto_device_count()
        wanted = max(devices) + 1 if isinstance(devices, list) and devices else devices
        if isinstance(wanted, int) and not isinstance(wanted, bool) and wanted > count:
            _fail("trainer.devices", devices, f"at most {count} GPU(s) here, or -1 for all")


@contextlib.contextmanager
def _quiet(logger: str) -> Iterator[None]:
    log = logging.getLogger(logger)
    before, log.disabled = log.disabled, True
    try:
        yield
    finally:
        log.disabled = before


def check_callbacks(callbacks: Any) -> None:
    """``callbacks``: name -> {_target_: importable Lightning Callback class, ...}."""
    import hydra.utils
    import pytorch_lightning as pl

    if callbacks is None:
        return
    if not isinstance(callbacks, dict):
        _fail("callbacks", callbacks, "a mapping name -> {_target_: a Callback class, ...}")
    for name, node in callbacks.items():
        if node is None:
            continue
        if not isinstance(node, dict) or not isinstance(node.get("_target_"), str):
            raise registry.ConfigError(
                f"callbacks.{name}={node!r} is not a callback; "
                f"set +callbacks.{name}._target_=<module>.<Callback class>"
            )
        target = node["_target_"]
        try:
            with _quiet("hydra.utils"):  # it logs the error too, on several lines
                cls = hydra.utils.get_class(target)
        except Exception as e:  # Hydra's message spans lines: joined, and cut short
            why = " ".join(str(e).split())[:200] or type(e).__name__
            raise registry.ConfigError(
                f"callbacks.{name}._target_={target!r} cannot be imported ({why}); "
                "name a Lightning Callback class as <module>.<Class>"
            ) from None
        if not issubclass(cls, pl.Callback):
            raise registry.ConfigError(
                f"callbacks.{name}._target_={target!r} is not a Lightning Callback; "
                "name a subclass of pytorch_lightning.Callback"
            )


def _check_sections(values: dict[str, Any]) -> None:
    """The plugin groups and the optim/trainer sections must be there, as mappings
    (``~attention``, ``attention=null`` or ``optim=5`` would fail deep in the run)."""
    for kind in registry.KINDS:
        if not isinstance(values.get(kind), dict):
            raise registry.ConfigError(
                f"the config selects no {kind} (was it removed with ~{kind} or {kind}=null?); "
                f"every run needs one: set {kind}=<name>; "
                f"{registry.suggest('', registry.available(kind))}"
            )
    for section in ("optim", "trainer"):
        if not isinstance(values.get(section), dict):
            _fail(
                section, values.get(section), f"a mapping of {section} settings ({section}.x=...)"
            )


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
    for key in ("seed", "data_dir", "optim", "trainer"):  # removed with ~key, say
        if key not in values:
            raise registry.ConfigError(
                f"the config has no {key!r} (removed with ~{key}?); every run needs one"
            )
    _check_sections(values)
    seed = cfg.seed
    _check_int("seed", seed, Range(min=0, max=2**32 - 1))  # what numpy's seeding accepts
    check_optim(OmegaConf.to_container(cfg.optim, resolve=True))
    check_trainer(OmegaConf.to_container(cfg.trainer, resolve=True))
    check_callbacks(values.get("callbacks"))
    for flag in ("skip_done", "compile"):
        if not isinstance(values.get(flag, False), bool):
            _fail(flag, values.get(flag), "true or false")
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
