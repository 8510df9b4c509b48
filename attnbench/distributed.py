"""Lightning's DDP inside Hydra runs: children that join the right job of a multirun,
CPU threads shared between processes, and per-process results gathered on rank 0."""

from __future__ import annotations

import os
import sys
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from lightning_fabric.utilities.apply_func import apply_to_collection
from omegaconf import open_dict, read_write
from pytorch_lightning.accelerators import CUDAAccelerator
from pytorch_lightning.callbacks import Callback

from attnbench import registry


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


def all_processes_sum(trainer: pl.Trainer, value: float) -> float:
    """The sum of each process's ``value`` (a count of its share of the samples)."""
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
