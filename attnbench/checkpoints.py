"""A job's checkpoints: which one may resume it, whether it fits the model, and which
one to test. A re-run sweep skips finished jobs and resumes interrupted ones with these."""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import Callback, ModelCheckpoint

from attnbench import registry
from attnbench.task import Network

# Settings that change how a job is run, not what it computes: a finished job whose config
# differs from this one only here is still done (skip_done), and its checkpoint resumes.
VOLATILE_KEYS = ("ckpt_path", "skip_done")
DONE = ("ok", "diverged")  # a failed job is run again
CONFIG_KEY = "attnbench_config"  # the job's config, kept in its checkpoints
WALL_KEY = "attnbench_wall_seconds"  # the job's wall time up to the checkpoint


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


def load_checkpoint(ckpt_path: str) -> dict[str, Any]:
    """A checked checkpoint's contents (tensors on the CPU, no code run)."""
    return torch.load(ckpt_path, map_location="cpu", weights_only=True)


def check_checkpoint_fits(ckpt_path: str, checkpoint: dict[str, Any], model) -> None:
    """The checkpoint's weights must have this model's names and shapes: resuming with
    another configuration is one line naming the first difference, not a page of Lightning's
    size-mismatch report."""
    saved = Network.upgrade_keys(checkpoint["state_dict"])  # as LitModel.on_load_checkpoint will
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


def job_config(cfg: DictConfig) -> dict[str, Any]:
    """What a job computes: its composed config (interpolations unresolved, so a moved
    sweep directory still matches) without Hydra's node and the volatile keys."""
    values = OmegaConf.to_container(cfg, resolve=False)
    for key in ("hydra", *VOLATILE_KEYS):
        values.pop(key, None)
    return values


def finished_summary(out_dir: Path, job: dict[str, Any]) -> dict[str, Any] | None:
    """The job's summary when it finished (ok or diverged) with this very config."""
    try:
        summary = json.loads((out_dir / "summary.json").read_text())
    except (OSError, ValueError):
        return None
    if summary.get("status") in DONE and summary.get("config") == job:
        return summary
    return None


def resumable_checkpoint(out_dir: Path, job: dict[str, Any]) -> str | None:
    """The job's own ``checkpoints/last.ckpt`` when an interrupted run of this config left
    one: a checkpoint of another config, or one cut short by a kill, starts afresh."""
    path = out_dir / "checkpoints" / "last.ckpt"
    if not path.is_file():
        return None
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True).get(CONFIG_KEY)
    except Exception:  # a half-written file (killed while saving): train from the start
        print(f"attnbench: {path} is unreadable; training from the start", file=sys.stderr)
        return None
    return str(path) if saved == job else None


class RecordConfig(Callback):
    """Keep the job's config in every checkpoint, so a re-run sweep knows which
    checkpoint may be resumed, and the job's wall time so far (from ``started``, the
    call's start), so a resumed job's summary also counts the calls before it."""

    def __init__(self, job: dict[str, Any], earlier_seconds: float, started: float):
        self.job, self.earlier_seconds, self.started = job, earlier_seconds, started

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict[str, Any]) -> None:
        checkpoint[CONFIG_KEY] = self.job
        checkpoint[WALL_KEY] = self.earlier_seconds + time.perf_counter() - self.started


def earlier_wall_seconds(ckpt_path: str, checkpoint: dict[str, Any]) -> float:
    """The wall time the interrupted calls that wrote this checkpoint spent, up to it: 0
    for one from before this was recorded, and for one of a run that finished (its
    summary.json counts that time; fine-tuning from it starts anew)."""
    if finished_summary_status(Path(ckpt_path).resolve().parent.parent) in DONE:
        return 0.0
    return float(checkpoint.get(WALL_KEY) or 0.0)


def finished_summary_status(run_dir: Path) -> str | None:
    try:
        return json.loads((run_dir / "summary.json").read_text()).get("status")
    except (OSError, ValueError, AttributeError):
        return None


def best_checkpoint(trainer: pl.Trainer) -> str | None:
    """The best-validation checkpoint when a monitoring ModelCheckpoint was asked for
    (callbacks=best_checkpoint), else None: test the last weights."""
    for callback in trainer.callbacks:
        if isinstance(callback, ModelCheckpoint) and callback.monitor and callback.best_model_path:
            return callback.best_model_path
    return None


def best_epoch(path: str | None) -> int | None:
    """The epoch a checkpoint was saved at (the best one, for the summary)."""
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
