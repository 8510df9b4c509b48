"""Callbacks of every run: stop on divergence, keep the log history across resumes."""

from __future__ import annotations

import time
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback

from attnbench.loggers import CSVLogger
from attnbench.registry import AttnbenchError


class Diverged(AttnbenchError):
    """Training produced a non-finite loss."""


class StopOnDivergence(Callback):
    """A non-finite training loss ends the run at once, with one line saying where.

    Lightning's EarlyStopping(check_finite=True) looks only at a validation metric after a
    whole epoch; a NaN loss poisons the weights at the first step, so check every step."""

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module, outputs, batch, batch_idx):
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        bad = loss is not None and not bool(torch.isfinite(loss.detach()).all())
        # Under DDP every rank must stop together: a rank that raised alone would leave the
        # others waiting in the next gradient all-reduce. One process: returns `bad` as is.
        if trainer.strategy.reduce_boolean_decision(bad, all=False):
            loss = loss if bad else torch.tensor(float("nan"))  # a finite rank: another's NaN
            raise Diverged(
                f"training diverged at epoch {trainer.current_epoch}, step "
                f"{trainer.global_step}: loss {loss.detach().float().item()}; "
                "lower optim.lr or add warm-up (optim.warmup_steps)"
            )


class LogHistory(Callback):
    """Resume without losing or repeating CSV rows: a checkpoint records how many rows the
    log held when it was written; a resumed run cuts the log back to them and appends, a
    fresh run into the same directory starts the log afresh."""

    KEY = "attnbench_csv_rows"

    def __init__(self):
        self.restored: dict[str, int] = {}

    @staticmethod
    def _writers(trainer: pl.Trainer) -> dict[str, Any]:
        # keyed by the logger's name, not its path: a moved run directory still resumes
        return {
            logger.name: logger.experiment
            for logger in trainer.loggers
            if isinstance(logger, CSVLogger)
        }

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict[str, Any]) -> None:
        checkpoint[self.KEY] = {d: w.rows() for d, w in self._writers(trainer).items()}

    def on_load_checkpoint(self, trainer, pl_module, checkpoint: dict[str, Any]) -> None:
        self.restored = dict(checkpoint.get(self.KEY, {}))

    def on_train_start(self, trainer, pl_module) -> None:
        for name, writer in self._writers(trainer).items():
            writer.keep_rows(self.restored.get(name, 0))


class PlainProgress(Callback):
    """Progress for logs, not terminals: when stdout is piped (nohup, CI, a cluster job) a
    redrawn bar shows nothing until the end, so print one plain line per epoch, and one
    every ``every_seconds`` within a long epoch."""

    def __init__(self, monitor: str, every_seconds: float = 30.0):
        self.monitor, self.every_seconds = monitor, every_seconds
        self._start = self._last = self._epoch_start = 0.0
        self._samples = 0

    def on_train_start(self, trainer, pl_module) -> None:
        self._start = self._last = time.perf_counter()

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._epoch_start, self._samples = time.perf_counter(), 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._samples += pl_module.task.num_samples(batch)
        if time.perf_counter() - self._last >= self.every_seconds:
            self._print(trainer, f"batch {batch_idx + 1}/{trainer.num_training_batches}")

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self._print(trainer, "done")

    def _print(self, trainer, where: str) -> None:
        now = time.perf_counter()
        self._last = now
        metrics = trainer.callback_metrics
        shown = [
            f"{key} {float(metrics[key]):.4f}"
            for key in ("train/loss", self.monitor)
            if key in metrics
        ]
        speed = self._samples / max(now - self._epoch_start, 1e-9)
        epochs = trainer.max_epochs if trainer.max_epochs and trainer.max_epochs > 0 else "?"
        print(
            f"epoch {trainer.current_epoch + 1}/{epochs} {where}  step {trainer.global_step}  "
            + "  ".join(shown)
            + f"  {speed:.0f} samples/s  elapsed {now - self._start:.0f} s",
            flush=True,
        )
