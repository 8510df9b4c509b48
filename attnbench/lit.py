"""The one generic LightningModule: task embedder -> backbone -> task head."""

from __future__ import annotations

import math
import time
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback
from torchmetrics import MeanMetric, MetricCollection

from attnbench.task import Network, Stage, Task


# Top-level modules of checkpoints written before they moved under LitModel.net.
class LitModel(pl.LightningModule):
    """Runs a task's :class:`Network` under Lightning. The task gets the plain network and
    the stage of each batch, never this module (nor the trainer)."""

    def __init__(self, task: Task, backbone: torch.nn.Module, optim: dict[str, Any]):
        super().__init__()
        self.task = task  # a plain object: its modules are the net's embedder and head
        d = backbone.d_model
        self.net = Network(task.build_embedder(d), backbone, task.build_head(d))
        self.optim = optim
        metrics = MetricCollection(task.metrics())
        self.val_metrics = metrics.clone(prefix="val/")
        self.test_metrics = metrics.clone(prefix="test/")
        # Mean loss per example as a metric, so DDP syncs it exactly across processes
        # (self.log(sync_dist=True) averages the processes' means, unweighted).
        self.val_loss, self.test_loss = MeanMetric(), MeanMetric()

    def forward(self, batch: Any, stage: Stage) -> Any:
        return self.task.forward(self.net, batch, stage)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        loss = self.task.loss(self(batch, "train"), batch)
        self.log("train/loss", loss, prog_bar=True, batch_size=self.task.num_samples(batch))
        return loss

    def _evaluate(self, batch: Any, stage: Stage, metrics: MetricCollection) -> None:
        outputs = self(batch, stage)
        n = self.task.num_samples(batch)
        mean_loss = getattr(self, f"{stage}_loss")
        mean_loss.update(self.task.loss(outputs, batch).detach().float(), n)
        self.log(f"{stage}/loss", mean_loss, batch_size=n)
        metrics.update(*self.task.metric_inputs(outputs, batch))
        self.log_dict(metrics, prog_bar=stage == "val", batch_size=n)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self._evaluate(batch, "val", self.val_metrics)

    def test_step(self, batch: Any, batch_idx: int) -> None:
        self._evaluate(batch, "test", self.test_metrics)

    def predict_step(self, batch: Any, batch_idx: int) -> Any:
        return self(batch, "predict")

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Resume checkpoints written before the modules moved under ``net``."""
        Network.upgrade_keys(checkpoint["state_dict"])

    def configure_optimizers(self):
        opt, sched = make_optimizer(
            self.parameters(), self.optim, self.trainer.estimated_stepping_batches
        )
        if sched is None:
            return opt
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def make_optimizer(params, optim: dict[str, Any], total_steps: int):
    """AdamW with linear warm-up then cosine decay to 0 (``optim.scheduler=none``: constant)."""
    opt = torch.optim.AdamW(params, lr=optim["lr"], weight_decay=optim["weight_decay"])
    if optim["scheduler"] == "none":
        return opt, None
    total = max(1, int(total_steps))
    warmup = min(optim["warmup_steps"], total // 2)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))

    return opt, torch.optim.lr_scheduler.LambdaLR(opt, factor)


class TaskData(pl.LightningDataModule):
    """Adapts a Task's dataloaders to Lightning. The task is already set up: the harness
    calls ``task.setup()`` once, before building the model."""

    def __init__(self, task: Task):
        super().__init__()
        self.task = task

    def train_dataloader(self):
        return self.task.dataloader("train")

    def val_dataloader(self):
        return self.task.dataloader("val")

    def test_dataloader(self):
        return self.task.dataloader("test")


class ReseedEachStep(Callback):
    """Make each step's randomness (dropout) a pure function of (seed, step, rank), so a run
    resumed from a checkpoint matches the uninterrupted run exactly, whatever RNG draws
    Lightning or the data loader make in between. Under DDP each rank draws its own masks
    (rank 0 the same as a single process): one shared mask pattern would correlate the
    ranks' gradient noise."""

    def __init__(self, seed: int):
        self.seed = seed

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module, batch, batch_idx) -> None:
        step_seed = self.seed * 1_000_003 + trainer.global_step
        torch.manual_seed(step_seed + trainer.global_rank * 1_000_000_007)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module, outputs, batch, batch_idx):
        # Back to the run's seed, the same on every rank: samplers take torch.initial_seed()
        # as the seed of their shuffle, and one built between steps (a loader reloaded at an
        # epoch's end) must shuffle alike on all ranks or the DDP shards overlap.
        torch.manual_seed(self.seed)


class RunStats(Callback):
    """Training throughput and per-epoch time, with validation time taken out."""

    def __init__(self):
        self.samples, self.train_seconds, self.epoch_seconds = 0, 0.0, []
        self._epoch_start = self._val_start = None
        self._val_seconds = 0.0

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._epoch_start, self._val_seconds = time.perf_counter(), 0.0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.samples += pl_module.task.num_samples(batch)

    def on_validation_start(self, trainer, pl_module) -> None:
        self._val_start = time.perf_counter()

    def on_validation_end(self, trainer, pl_module) -> None:
        if self._epoch_start is not None and not trainer.sanity_checking:
            self._val_seconds += time.perf_counter() - self._val_start

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        seconds = self._open_epoch_seconds()
        self._epoch_start = None
        self.epoch_seconds.append(seconds)
        self.train_seconds += seconds

    def _open_epoch_seconds(self) -> float:
        return time.perf_counter() - self._epoch_start - self._val_seconds

    # Kept in the checkpoint, so a resumed run's summary covers every epoch. The checkpoint
    # is written after validation, before on_train_epoch_end: count the open epoch there.
    def state_dict(self) -> dict:
        open_epoch = [self._open_epoch_seconds()] if self._epoch_start is not None else []
        return {
            "samples": self.samples,
            "epoch_seconds": self.epoch_seconds + open_epoch,
            "train_seconds": self.train_seconds + sum(open_epoch),
        }

    def load_state_dict(self, state_dict: dict) -> None:
        self.samples = state_dict["samples"]
        self.epoch_seconds = list(state_dict["epoch_seconds"])
        self.train_seconds = state_dict["train_seconds"]

    @property
    def samples_per_second(self) -> float | None:
        return self.samples / self.train_seconds if self.train_seconds > 0 else None
