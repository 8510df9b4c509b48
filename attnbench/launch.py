"""What a job needs to know about the sweep it runs in (config resolvers): its share of the
cores, and the wandb group and name that keep a sweep's jobs apart.

Torch starts one intra-op thread per core in every process, so two joblib workers on a
2-core machine would run four threads on two cores and each go slower than one alone. The
config's ``threads`` (default ``${attnbench.job_threads:}``) is the job's share, read from
the launcher that runs it, and the job applies it before it builds anything."""

from __future__ import annotations

import hashlib
import os
from typing import Any

from attnbench import registry


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS has no affinity
        return os.cpu_count() or 1


def threads_for(launcher: Any, cores: int) -> int | None:
    """Threads per job for a launcher config; None: torch's default (all cores)."""
    launcher = launcher or {}
    target = str(launcher.get("_target_", ""))
    if "joblib" in target:
        n_jobs = int(launcher.get("n_jobs") or 1)
        workers = n_jobs if n_jobs > 0 else max(1, cores + 1 + n_jobs)  # -1: one per core
        return max(1, cores // workers)
    if launcher.get("cpus_per_task"):  # submitit: what SLURM (or the local run) reserved
        return int(launcher["cpus_per_task"])
    return None


def job_threads() -> int | None:
    """Resolver ``${attnbench.job_threads:}``: the running job's share of the cores."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return None
    return threads_for(HydraConfig.get().get("launcher"), usable_cores())


def apply_threads(cfg: Any) -> None:
    """Set torch's intra-op threads from ``threads`` (null: leave torch's default)."""
    threads = cfg.get("threads")
    if threads is None:
        return
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise registry.ConfigError(
            f"threads={threads!r}; allowed: a positive integer, or null for torch's default"
        )
    import torch

    torch.set_num_threads(threads)


# -- loggers under a sweep: one wandb run per job, grouped by the sweep, named by overrides


def _hydra() -> Any:
    from hydra.core.hydra_config import HydraConfig

    return HydraConfig.get() if HydraConfig.initialized() else None


def _in_multirun(hydra: Any) -> bool:
    from hydra.types import RunMode

    return hydra is not None and hydra.get("mode") == RunMode.MULTIRUN


def sweep_group() -> str | None:
    """``${attnbench.sweep_group:}``: the sweep directory's last two parts (by default
    <date>/<time>), one wandb group per sweep; null for a single run."""
    from pathlib import Path

    hydra = _hydra()
    if not _in_multirun(hydra):
        return None
    return "/".join(Path(str(hydra.sweep.dir)).parts[-2:])


def job_name() -> str | None:
    """``${attnbench.job_name:}``: the job's overrides (hydra.job.override_dirname), so
    wandb names each job of a sweep by what it varied, as its folder does; null when there
    are none."""
    hydra = _hydra()
    name = hydra.job.get("override_dirname") if hydra is not None else None
    if name and _in_multirun(hydra):
        return job_dirname(hydra.job.num, name).split("_", 1)[1]
    return name or None


MAX_NAME_BYTES = 255  # one folder name, on the common file systems


def job_dirname(num: Any, overrides: str) -> str:
    """``${attnbench.job_dirname:${hydra.job.num},${hydra.job.override_dirname}}``: a sweep
    job's folder, ``<num>_<overrides>``. Hydra uses the overrides verbatim, so
    ``task.data_dir=/data/x`` would nest folders (and the job's summary.json would not be
    found) and a long sweep would exceed the file system's 255 bytes: '/' becomes '_', and a
    name over 255 bytes is cut, ending in a hash of the whole (the number keeps it unique)."""
    name = str(overrides or "").replace("/", "_")
    folder = f"{num}_{name}"
    encoded = folder.encode()
    if len(encoded) <= MAX_NAME_BYTES:
        return folder
    digest = hashlib.sha1(name.encode()).hexdigest()[:10]
    head = encoded[: MAX_NAME_BYTES - len(digest) - 1].decode(errors="ignore")
    return f"{head}-{digest}"


RESOLVERS = {
    "job_threads": job_threads,
    "sweep_group": sweep_group,
    "job_name": job_name,
    "job_dirname": job_dirname,
}
