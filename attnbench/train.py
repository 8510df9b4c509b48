"""A training run: compose plugins from the config, fit/validate/test with Lightning,
write ``summary.json``. Imported only when a run starts (it pulls in Lightning)."""

from __future__ import annotations

import json
import logging
import math
import os
import platform
import resource
import shutil
import sys
import time
import warnings
from importlib import metadata
from pathlib import Path
from typing import Any

import hydra
import pytorch_lightning as pl
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import ModelCheckpoint, RichProgressBar

from attnbench import config, registry
from attnbench.builders import build_backbone, check_positions, refuse_unservable, selected
from attnbench.callbacks import Diverged, LogHistory, PlainProgress, StopOnDivergence
from attnbench.lit import LitModel, ReseedEachStep, RunStats, TaskData
from attnbench.task import Network
from attnbench.validate import check_metric_name, check_run_config

# Lightning's advertising tip and a torch-version deprecation inside Lightning are noise in
# every run's output.
logging.getLogger("pytorch_lightning.utilities.rank_zero").addFilter(
    lambda record: "litlogger" not in record.getMessage()
)
warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")

VERSIONED = ("attnbench", "torch", "pytorch-lightning", "hydra-core", "torchmetrics", "wandb")


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for dist in VERSIONED:
        try:
            found[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return found


def finite_or_none(value: Any) -> Any:
    """JSON has no NaN or Infinity: non-finite numbers become null, recursively."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite_or_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_or_none(v) for v in value]
    return value


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    """Strict JSON (non-finite numbers as null), replaced atomically: a crash never leaves
    a half-written file."""
    tmp = path.with_suffix(".json.tmp")
    text = json.dumps(finite_or_none(data), indent=2, sort_keys=True, allow_nan=False)
    tmp.write_text(text + "\n")
    os.replace(tmp, path)


def checked_checkpoint(ckpt_path: Any) -> str | None:
    """A local checkpoint file that loads with ``weights_only=True`` (no code runs from
    it), or a one-line error naming the file. Checked before any data is loaded."""
    if ckpt_path is None:
        return None
    path = str(ckpt_path)
    if "://" in path:
        raise registry.ConfigError(
            f"ckpt_path={path}: only local checkpoint files are accepted (a remote one could "
            "run code when loaded); download it and pass its path"
        )
    file = Path(path).expanduser()
    if not file.is_file():
        raise registry.ConfigError(
            f"ckpt_path={path}: no such file; pass a run's checkpoints/last.ckpt"
        )
    if file.stat().st_size == 0:
        raise registry.ConfigError(f"ckpt_path={path}: the file is empty")
    try:
        checkpoint = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated, random bytes, or a pickle that wants to run code
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
        raise registry.ConfigError(
            f"ckpt_path={path}: not a loadable checkpoint ({type(e).__name__}: {reason})"
        ) from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise registry.ConfigError(f"ckpt_path={path}: not a Lightning checkpoint (no state_dict)")
    return str(file)


def check_checkpoint_fits(ckpt_path: str, model: torch.nn.Module) -> None:
    """The checkpoint's weights must have this model's names and shapes: resuming with
    another configuration is one line naming the first difference, not a page of Lightning's
    size-mismatch report."""
    saved = torch.load(ckpt_path, map_location="cpu", weights_only=True)["state_dict"]
    saved = Network.upgrade_keys(saved)  # as LitModel.on_load_checkpoint will
    mine = model.state_dict()
    for key, tensor in mine.items():
        if key not in saved or saved[key].shape != tensor.shape:
            found = tuple(saved[key].shape) if key in saved else "nothing"
            raise registry.ConfigError(
                f"ckpt_path={ckpt_path} does not fit this model: {key} is {found} there and "
                f"{tuple(tensor.shape)} here; resume with the settings the run was trained "
                "with (its .hydra/overrides.yaml)"
            )
    extra = sorted(set(saved) - set(mine))
    if extra:
        raise registry.ConfigError(
            f"ckpt_path={ckpt_path} does not fit this model: it holds {extra[0]} (and "
            f"{len(extra) - 1} more) that this model lacks; resume with the run's settings"
        )


def instantiate(node: Any, where: str, **kwargs: Any) -> Any:
    """hydra.utils.instantiate, with its failures as one line naming the config key and the
    cause (Hydra's own message says only "Error in call to target ...")."""
    try:
        return hydra.utils.instantiate(node, **kwargs)
    except Exception as e:
        root = e
        while root.__cause__ is not None or root.__context__ is not None:
            if isinstance(root, registry.AttnbenchError):
                break
            root = root.__cause__ or root.__context__
        if isinstance(root, registry.AttnbenchError):
            raise root from None
        raise registry.ConfigError(f"{where}: {one_line(root)}") from None


def _number(value: Any) -> float:
    return float(value.item() if hasattr(value, "item") else value)


def run(cfg: DictConfig) -> dict[str, Any]:
    """Fit, validate and test one configuration; returns the summary (also on disk).

    A run that fails raises; one that diverges returns its summary with
    ``"status": "diverged"`` and the reason."""
    failed = True
    try:
        summary = _run(cfg)
        failed = summary["status"] != "ok"
        return summary
    finally:
        finish_wandb(failed)


def _run(cfg: DictConfig) -> dict[str, Any]:
    start = time.perf_counter()
    check_run_config(cfg)
    plugins = selected(cfg)
    if cfg.get("match_params"):
        from attnbench.param_match import check_reference

        check_reference(OmegaConf.to_container(cfg.match_params).get("reference"))
    ckpt_path = checked_checkpoint(cfg.ckpt_path)
    out_dir = Path(HydraConfig.get().runtime.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)  # Hydra makes it; in-process callers may not
    pl.seed_everything(cfg.seed, workers=True, verbose=False)

    task_name, task_params = plugins["task"]
    task = registry.build("task", task_name, data_dir=str(cfg.data_dir), **task_params)
    refuse_unservable(plugins, task)  # before the data loads
    task.setup()
    check_positions(plugins, task)
    if cfg.get("match_params"):  # equal parameter budgets (experiment=compare_backbones)
        from attnbench.param_match import match_widths

        plugins = match_widths(plugins, task, **OmegaConf.to_container(cfg.match_params))
    model = LitModel(task, build_backbone(plugins, task), OmegaConf.to_container(cfg.optim))
    if ckpt_path:
        check_checkpoint_fits(ckpt_path, model)
    check_metric_name(cfg.optimized_metric, task)
    metric_name = cfg.optimized_metric or task.monitor
    config.RUN_MONITOR.update(monitor=metric_name, mode=monitor_mode(metric_name, task))

    stats = RunStats()
    on_terminal = sys.stdout.isatty()
    callbacks = [
        # redraws/s: the default 100 costs ~7% of a CPU step; piped output gets plain lines
        RichProgressBar(refresh_rate=10) if on_terminal else PlainProgress(metric_name),
        # last.ckpt after every epoch (save_last with save_top_k=0 only writes it at the end)
        ModelCheckpoint(
            dirpath=out_dir / "checkpoints",
            filename="last",
            save_top_k=1,
            enable_version_counter=False,
        ),
        ReseedEachStep(cfg.seed),
        StopOnDivergence(),
        LogHistory(),
        stats,
        *(instantiate(c, f"callbacks.{k}") for k, c in (cfg.get("callbacks") or {}).items()),
    ]
    loggers = [instantiate(c, f"logger.{k}") for k, c in (cfg.logger or {}).items()]
    trainer: pl.Trainer = instantiate(
        cfg.trainer,
        "trainer",
        callbacks=callbacks,
        logger=loggers or False,
        **({} if on_terminal else {"enable_progress_bar": False}),
    )
    data = TaskData(task)
    if ckpt_path:
        carry_log_history(Path(ckpt_path), out_dir)
    status, reason = "ok", None
    try:
        trainer.fit(model, datamodule=data, ckpt_path=ckpt_path, weights_only=True)
    except Diverged as e:
        status, reason = "diverged", str(e)
        print(f"attnbench: {reason}", file=sys.stderr)
    metrics = {k: _number(v) for k, v in trainer.callback_metrics.items()}
    # now: testing a checkpoint restores the callbacks' state (RunStats's) from it
    timing = {
        "train_samples_per_s": stats.samples_per_second,
        "train_seconds": stats.train_seconds,
        "epoch_seconds": list(stats.epoch_seconds),
    }
    predictions = {}
    best = best_checkpoint(trainer) if status == "ok" else None
    if status == "ok":
        if "test" not in task.unlabeled_splits:
            tested = trainer.test(
                model, datamodule=data, verbose=False, ckpt_path=best, weights_only=True
            )
            for result in tested:
                metrics.update({k: _number(v) for k, v in result.items()})
        for split in dict.fromkeys((*task.unlabeled_splits, *task.prediction_splits)):
            outputs = trainer.predict(model, dataloaders=task.dataloader(split))
            predictions[split] = str(task.save_predictions(split, outputs, out_dir))

    summary = {
        "status": status,
        "reason": reason,
        "metrics": dict(sorted(metrics.items())),
        "optimized_metric": metric_name,
        "plugins": {kind: {"name": name, **params} for kind, (name, params) in plugins.items()},
        "predictions": predictions,
        "tested": "best" if best else "last",
        "best_epoch": _best_epoch(best),
        "params": sum(p.numel() for p in model.parameters()),
        "receptive_field": getattr(model.net.backbone, "receptive_field", None),
        **timing,
        "wall_seconds": time.perf_counter() - start,
        "peak_memory_mb": peak_memory_mb(model.device),
        "device": str(model.device),
        "seed": cfg.seed,
        "overrides": list(HydraConfig.get().overrides.task),
        "versions": versions(),
    }
    write_json_atomic(out_dir / "summary.json", summary)
    return summary


def one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:200]}" if text else type(e).__name__


def record_failure(reason: str) -> None:
    """Write why this job failed into its own directory, as a summary with status "failed"
    (reports list it). An earlier successful summary there is never overwritten: the
    failure then goes to failed.json beside it."""
    out_dir = Path(HydraConfig.get().runtime.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    record = {
        "status": "failed",
        "reason": reason,
        "metrics": {},
        "overrides": list(HydraConfig.get().overrides.task),
        "versions": versions(),
    }
    target = out_dir / "summary.json"
    if target.is_file():
        try:
            earlier = json.loads(target.read_text()).get("status", "ok")
        except ValueError:
            earlier = "unreadable"
        if earlier == "ok":
            target = out_dir / "failed.json"
    write_json_atomic(target, record)


def monitor_mode(metric: str, task) -> str:
    """Whether the monitored metric should go up or down."""
    if metric == task.monitor:
        return task.mode
    return "min" if metric.endswith("loss") else "max"


def best_checkpoint(trainer: pl.Trainer) -> str | None:
    """The best-validation checkpoint when a monitoring ModelCheckpoint was asked for
    (callbacks=best_checkpoint), else None: test the last weights."""
    for callback in trainer.callbacks:
        if isinstance(callback, ModelCheckpoint) and callback.monitor and callback.best_model_path:
            return callback.best_model_path
    return None


def _best_epoch(path: str | None) -> int | None:
    if not path:
        return None
    return int(torch.load(path, map_location="cpu", weights_only=True)["epoch"])


def carry_log_history(ckpt: Path, out_dir: Path) -> None:
    """Resuming into a new directory from another run's checkpoint: start its CSV log from
    the earlier run's (LogHistory then keeps the rows the checkpoint had seen)."""
    earlier = ckpt.resolve().parent.parent / "csv" / "metrics.csv"
    mine = out_dir / "csv" / "metrics.csv"
    if earlier.is_file() and not mine.exists() and earlier.parent != mine.parent.resolve():
        mine.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(earlier, mine)


def finish_wandb(failed: bool) -> None:
    """Close any wandb run we started, so offline runs are complete and syncable."""
    wandb = sys.modules.get("wandb")
    if wandb is not None and getattr(wandb, "run", None) is not None:
        wandb.finish(exit_code=1 if failed else 0)
