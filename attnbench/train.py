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
from hydra.types import RunMode
from lightning_fabric.utilities.apply_func import apply_to_collection
from omegaconf import DictConfig, OmegaConf, open_dict, read_write
from pytorch_lightning.accelerators import CUDAAccelerator
from pytorch_lightning.callbacks import Callback, ModelCheckpoint, RichProgressBar
from pytorch_lightning.utilities.rank_zero import rank_zero_only

from attnbench import config, registry
from attnbench.builders import build_backbone, check_positions, refuse_unservable, selected
from attnbench.callbacks import Diverged, LogHistory, PlainProgress, StopOnDivergence
from attnbench.data import batching
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
# Settings that change how a job is run, not what it computes: a finished job whose config
# differs from this one only here is still done (skip_done), and its checkpoint resumes.
VOLATILE_KEYS = ("ckpt_path", "skip_done")
DONE = ("ok", "diverged")  # a failed job is run again
CONFIG_KEY = "attnbench_config"  # the job's config, kept in its checkpoints


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
    checkpoint may be resumed."""

    def __init__(self, job: dict[str, Any]):
        self.job = job

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict[str, Any]) -> None:
        checkpoint[CONFIG_KEY] = self.job


class RefuseUnshardedData(Callback):
    """Under DDP each process must train on its own share of the data: a training loader
    whose batch sampler does not shard itself (attnbench.data.batching) would have every
    process repeat the whole epoch. Fail closed, with the fix."""

    def on_train_start(self, trainer: pl.Trainer, pl_module) -> None:
        loader = trainer.train_dataloader
        sampler = getattr(loader, "batch_sampler", None)
        if trainer.world_size > 1 and not getattr(sampler, "shards_across_processes", False):
            name = type(pl_module.task).__name__
            raise registry.ConfigError(
                f"the task {name} trains on data that cannot be split across "
                f"{trainer.world_size} processes (its training DataLoader does not use "
                "attnbench.data.batching's samplers); run it with trainer.devices=1"
            )


CONFIG_FLAGS = ("--config-dir", "-cd", "--config-path", "-cp", "--config-name", "-cn")


def child_argv(argv: list[str], job_overrides: list[str]) -> list[str]:
    """A DDP child's command line for one job of a multirun: the primary config the sweep
    was started with (``--config-dir D --config-name best``), the job's own overrides, and
    ``hydra.mode=RUN`` (a preset such as hparams_search sets MULTIRUN: the child would
    start a search of its own instead of joining this job)."""
    flags, i = [], 1
    while i < len(argv):
        word = argv[i]
        if word in CONFIG_FLAGS and i + 1 < len(argv):
            flags += argv[i : i + 2]
            i += 2
            continue
        if "=" in word and word.split("=", 1)[0] in CONFIG_FLAGS:
            flags.append(word)
        i += 1
    return [argv[0], *flags, *job_overrides, "hydra.mode=RUN"]


def ddp_children_run_this_job() -> None:
    """Make Lightning's DDP re-launch (strategy=ddp starts ranks > 0 as
    ``python <script> <sys.argv[1:]> hydra.run.dir=<hydra.run.dir>``) run this job.

    In a multirun sys.argv holds the whole sweep (-m, comma lists) and hydra.run.dir is
    not the job's directory, so each child would start a sweep of its own (the known
    Hydra + DDP problem, Lightning issues #11300/#15689). The child gets this job's own
    overrides and directory instead. We use strategy=ddp rather than ddp_spawn: ddp_spawn
    pickles the task and its data into fresh processes for every fit/test/predict call
    and loses the callbacks' state (throughput, log history) in the main process."""
    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode != RunMode.MULTIRUN:
        return
    sys.argv = child_argv(sys.argv, list(hydra_cfg.overrides.task))
    with read_write(hydra_cfg), open_dict(hydra_cfg):
        hydra_cfg.run.dir = hydra_cfg.runtime.output_dir


def share_cpu_threads(trainer: pl.Trainer) -> None:
    """CPU processes of one machine split its cores: each gets cores // processes torch
    threads at most. Lightning does this only when OMP_NUM_THREADS is unset; with it set
    (say to the core count), two processes run twice as many spinning OpenMP threads as
    there are cores and every step waits on descheduled threads (task=image ran 26x slower
    under DDP than alone)."""
    if trainer.num_devices < 2 or isinstance(trainer.accelerator, CUDAAccelerator):
        return
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    share = max(1, (cores or 1) // trainer.num_devices)
    if torch.get_num_threads() > share:
        torch.set_num_threads(share)


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


# What Lightning's DDP launcher puts in the environment of the process that launched it.
DDP_ENV = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE")


def end_ddp(env: dict[str, str | None]) -> None:
    """Leave no process group and no launcher settings behind: the next job of a sweep
    run in this process starts its own DDP processes (Lightning would otherwise reuse the
    finished job's group, whose other processes have exited)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    for key, value in env.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


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
            # at epoch ends only: Lightning resumes a mid-epoch checkpoint (validation every
            # N steps) by replaying the epoch's first batches, so a resumed run would differ
            save_on_train_epoch_end=True,
        ),
        ReseedEachStep(cfg.seed),
        RecordConfig(job),
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
        "config": job,
        "world_size": trainer.world_size,
    }
    if trainer.is_global_zero:
        write_json_atomic(out_dir / "summary.json", summary)
    return summary


def all_processes_sum(trainer: pl.Trainer, value: float) -> float:
    if trainer.world_size == 1:
        return value
    total = torch.tensor(float(value), device=trainer.strategy.root_device)
    return float(trainer.strategy.reduce(total, reduce_op="sum"))


def all_predictions(trainer: pl.Trainer, model: pl.LightningModule, loader) -> list[Any]:
    """The predict outputs of every batch, in single-process order, on rank 0. Under DDP
    each process predicts every world-th batch (batching.shard_batches): gather them and
    interleave them back."""
    outputs = trainer.predict(model, dataloaders=loader)
    world = trainer.world_size
    if world == 1:
        return outputs
    mine = apply_to_collection(outputs, torch.Tensor, lambda t: t.cpu())
    gathered: list[Any] = [None] * world
    torch.distributed.all_gather_object(gathered, mine)
    return [batch for shard in zip(*gathered, strict=True) for batch in shard]


def one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:200]}" if text else type(e).__name__


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
