"""A training run: compose plugins from the config, fit/validate/test with Lightning,
write ``summary.json``. Imported only when a run starts (it pulls in Lightning)."""

from __future__ import annotations

import json
import logging
import math
import os
import platform
import resource
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
from pytorch_lightning.accelerators import CUDAAccelerator
from pytorch_lightning.callbacks import ModelCheckpoint, RichProgressBar
from pytorch_lightning.utilities.rank_zero import rank_zero_only

from attnbench import config, registry
from attnbench.builders import build_backbone, check_positions, refuse_unservable, selected
from attnbench.callbacks import Diverged, LogHistory, PlainProgress, StopOnDivergence
from attnbench.checkpoints import (
    RecordConfig,
    best_checkpoint,
    best_epoch,
    carry_log_history,
    check_checkpoint_fits,
    checked_checkpoint,
    earlier_wall_seconds,
    finished_summary,
    job_config,
    load_checkpoint,
    resumable_checkpoint,
)
from attnbench.data import batching
from attnbench.distributed import (
    DDP_ENV,
    RefuseUnshardedData,
    all_predictions,
    all_processes_sum,
    ddp_children_run_this_job,
    end_ddp,
    share_cpu_threads,
)
from attnbench.lit import LitModel, ReseedEachStep, RunStats, TaskData
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
        raise registry.ConfigError(f"{where}: {registry.one_line(root)}") from None


def _number(value: Any) -> float:
    return float(value.item() if hasattr(value, "item") else value)


def run(cfg: DictConfig) -> dict[str, Any]:
    """Fit, validate and test one configuration; returns the summary (also on disk).

    A run that fails raises; one that diverges returns its summary with
    ``"status": "diverged"`` and the reason. With ``skip_done`` (the default) a job
    whose directory holds the summary of a finished run of the same config returns that
    summary without running, and one interrupted after a checkpoint resumes from it."""
    failed = True
    argv, env = list(sys.argv), {k: os.environ.get(k) for k in DDP_ENV}
    try:
        summary = _run(cfg)
        failed = summary["status"] != "ok"
        return summary
    finally:
        sys.argv = argv
        end_ddp(env)
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
    job = job_config(cfg)
    skip_done = cfg.get("skip_done", True)
    if not isinstance(skip_done, bool):
        raise registry.ConfigError(f"skip_done={skip_done!r}: must be true or false")
    if skip_done:
        done = finished_summary(out_dir, job)
        if done is not None:
            print(f"attnbench: finished already, skipped (skip_done=true): {out_dir}")
            return done
        if ckpt_path is None:
            ckpt_path = resumable_checkpoint(out_dir, job)
    pl.seed_everything(cfg.seed, workers=True, verbose=False)

    task_name, task_params = plugins["task"]
    task = registry.build("task", task_name, data_dir=str(cfg.data_dir), **task_params)
    refuse_unservable(plugins, task)  # before the data loads
    task.setup()
    check_positions(plugins, task)
    if cfg.get("match_params"):  # equal parameter budgets (experiment=compare_backbones)
        from attnbench.param_match import match_widths

        plugins = match_widths(plugins, task, **OmegaConf.to_container(cfg.match_params))
    backbone = build_backbone(plugins, task)
    if cfg.get("compile"):
        backbone.compile()  # in place: the state_dict keeps its keys, checkpoints load anywhere
    model = LitModel(task, backbone, OmegaConf.to_container(cfg.optim))
    earlier = 0.0  # seconds the interrupted calls this one resumes had spent
    if ckpt_path:
        checkpoint = load_checkpoint(ckpt_path)
        check_checkpoint_fits(ckpt_path, checkpoint, model)
        earlier = earlier_wall_seconds(ckpt_path, checkpoint)
        del checkpoint  # Lightning loads it again for fit(); don't hold two copies
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
            # at epoch ends only: Lightning resumes a mid-epoch checkpoint (validation every
            # N steps) by replaying the epoch's first batches, so a resumed run would differ
            save_on_train_epoch_end=True,
        ),
        ReseedEachStep(cfg.seed),
        RecordConfig(job, earlier, started=start),
        RefuseUnshardedData(),
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
    if rank_zero_only.rank != 0:  # one progress report and one result line, from rank 0
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 (for the rest of this process)
    ddp_children_run_this_job()
    share_cpu_threads(trainer)
    batching.LOADER_OPTIONS["pin_memory"] = (
        isinstance(trainer.accelerator, CUDAAccelerator) and torch.cuda.is_available()
    )
    data = TaskData(task)
    if ckpt_path and trainer.is_global_zero:
        carry_log_history(Path(ckpt_path), out_dir)
    status, reason = "ok", None
    try:
        trainer.fit(model, datamodule=data, ckpt_path=ckpt_path, weights_only=True)
    except Diverged as e:
        status, reason = "diverged", str(e)
        print(f"attnbench: {reason}", file=sys.stderr)
    metrics = {k: _number(v) for k, v in trainer.callback_metrics.items()}
    # now: testing a checkpoint restores the callbacks' state (RunStats's) from it
    samples = all_processes_sum(trainer, stats.samples)  # each process counts its share
    timing = {
        "train_samples_per_s": samples / stats.train_seconds if stats.train_seconds else None,
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
            outputs = all_predictions(trainer, model, task.dataloader(split))
            if trainer.is_global_zero:
                predictions[split] = str(task.save_predictions(split, outputs, out_dir))

    summary = {
        "status": status,
        "reason": reason,
        "metrics": dict(sorted(metrics.items())),
        "optimized_metric": metric_name,
        "plugins": {kind: {"name": name, **params} for kind, (name, params) in plugins.items()},
        "predictions": predictions,
        "tested": "best" if best else "last",
        "best_epoch": best_epoch(best),
        "params": sum(p.numel() for p in model.parameters()),
        "receptive_field": getattr(model.net.backbone, "receptive_field", None),
        **timing,
        "wall_seconds": time.perf_counter() - start,  # this call
        "earlier_wall_seconds": earlier,  # the calls this one resumed, to their checkpoint
        "peak_memory_mb": peak_memory_mb(model.device),
        "device": str(model.device),
        "seed": cfg.seed,
        "overrides": list(HydraConfig.get().overrides.task),
        "versions": versions(),
        "config": job,
        "world_size": trainer.world_size,
    }
    if trainer.is_global_zero:
        write_json_atomic(out_dir / "summary.json", summary)
    return summary


def record_failure(reason: str) -> None:
    """Write why this job failed into its own directory, as a summary with status "failed"
    (reports list it). An earlier successful summary there is never overwritten: the
    failure then goes to failed.json beside it."""
    if rank_zero_only.rank != 0:  # rank 0 records the job's outcome
        return
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


def finish_wandb(failed: bool) -> None:
    """Close any wandb run we started, so offline runs are complete and syncable."""
    wandb = sys.modules.get("wandb")
    if wandb is not None and getattr(wandb, "run", None) is not None:
        wandb.finish(exit_code=1 if failed else 0)
