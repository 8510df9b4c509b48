"""A training run: compose plugins from the config, fit/validate/test with Lightning,
write ``summary.json``. Imported only when a run starts (it pulls in Lightning)."""

from __future__ import annotations

import json
import logging
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
from pytorch_lightning.callbacks import ModelCheckpoint, RichProgressBar

from attnbench import registry
from attnbench.builders import build_backbone, selected
from attnbench.lit import LitModel, ReseedEachStep, RunStats, TaskData

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


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)  # a crash never leaves a half-written summary


def _number(value: Any) -> float:
    return float(value.item() if hasattr(value, "item") else value)


def run(cfg: DictConfig) -> dict[str, Any]:
    """Fit, validate and test one configuration; returns the summary (also on disk)."""
    failed = True
    try:
        summary = _run(cfg)
        failed = False
        return summary
    finally:
        finish_wandb(failed)


def _run(cfg: DictConfig) -> dict[str, Any]:
    start = time.perf_counter()
    plugins = selected(cfg)
    out_dir = Path(HydraConfig.get().runtime.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)  # Hydra makes it; in-process callers may not
    pl.seed_everything(cfg.seed, workers=True, verbose=False)

    task_name, task_params = plugins["task"]
    task = registry.build("task", task_name, data_dir=str(cfg.data_dir), **task_params)
    task.setup()
    if cfg.get("match_params"):  # equal parameter budgets (experiment=compare_backbones)
        from attnbench.param_match import match_widths

        plugins = match_widths(plugins, task, **OmegaConf.to_container(cfg.match_params))
    model = LitModel(task, build_backbone(plugins, task), OmegaConf.to_container(cfg.optim))
    metric_name = cfg.optimized_metric or task.monitor

    stats = RunStats()
    callbacks = [
        RichProgressBar(refresh_rate=10),  # redraws/s; the default 100 costs ~7% of a CPU step
        # last.ckpt after every epoch (save_last with save_top_k=0 only writes it at the end)
        ModelCheckpoint(
            dirpath=out_dir / "checkpoints",
            filename="last",
            save_top_k=1,
            enable_version_counter=False,
        ),
        ReseedEachStep(cfg.seed),
        stats,
        *(hydra.utils.instantiate(c) for c in (cfg.get("callbacks") or {}).values()),
    ]
    loggers = [hydra.utils.instantiate(c) for c in (cfg.logger or {}).values()]
    trainer: pl.Trainer = hydra.utils.instantiate(
        cfg.trainer, callbacks=callbacks, logger=loggers or False
    )
    data = TaskData(task)
    trainer.fit(model, datamodule=data, ckpt_path=cfg.ckpt_path)
    metrics = {k: _number(v) for k, v in trainer.callback_metrics.items()}
    if "test" not in task.unlabeled_splits:
        for result in trainer.test(model, datamodule=data, verbose=False):
            metrics.update({k: _number(v) for k, v in result.items()})
    predictions = {}
    for split in dict.fromkeys((*task.unlabeled_splits, *task.prediction_splits)):
        outputs = trainer.predict(model, dataloaders=task.dataloader(split))
        predictions[split] = str(task.save_predictions(split, outputs, out_dir))

    summary = {
        "metrics": dict(sorted(metrics.items())),
        "optimized_metric": metric_name,
        "plugins": {kind: {"name": name, **params} for kind, (name, params) in plugins.items()},
        "predictions": predictions,
        "params": sum(p.numel() for p in model.parameters()),
        "receptive_field": getattr(model.backbone, "receptive_field", None),
        "train_samples_per_s": stats.samples_per_second,
        "train_seconds": stats.train_seconds,
        "epoch_seconds": stats.epoch_seconds,
        "wall_seconds": time.perf_counter() - start,
        "peak_memory_mb": peak_memory_mb(model.device),
        "device": str(model.device),
        "seed": cfg.seed,
        "overrides": list(HydraConfig.get().overrides.task),
        "versions": versions(),
    }
    write_json_atomic(out_dir / "summary.json", summary)
    return summary


def finish_wandb(failed: bool) -> None:
    """Close any wandb run we started, so offline runs are complete and syncable."""
    wandb = sys.modules.get("wandb")
    if wandb is not None and getattr(wandb, "run", None) is not None:
        wandb.finish(exit_code=1 if failed else 0)
