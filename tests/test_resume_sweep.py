"""Resumable sweeps: re-running a sweep into its directory skips finished jobs (same config,
status ok or diverged), re-runs failed ones and resumes interrupted ones from last.ckpt; a
sweep killed with SIGKILL and re-run ends with exactly the uninterrupted sweep's results."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import time
from pathlib import Path

from conftest import ATTNBENCH, cli, compose

SWEEP = [
    "-m",
    "experiment=sentiment_quick",
    "seed=1,2,3",
    "trainer.max_epochs=2",
    "trainer.limit_train_batches=10",
    "trainer.limit_val_batches=4",
    "trainer.limit_test_batches=4",
]
ENV = {"OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}


def _jobs(sweep_dir: Path) -> dict[str, Path]:
    return {p.parent.name: p.parent for p in sorted(sweep_dir.glob("*/.hydra"))}


def _metrics(job: Path) -> dict[str, float]:
    return json.loads((job / "summary.json").read_text())["metrics"]


def _history(job: Path) -> list[dict[str, str]]:
    """The CSV log's metric rows (no timing columns), in order."""
    with open(job / "csv" / "metrics.csv") as f:
        return [{k: v for k, v in row.items() if "time" not in k} for row in csv.DictReader(f)]


def _kill_when(process: subprocess.Popen, ready, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        assert process.poll() is None, "the sweep ended before it could be interrupted"
        assert time.monotonic() < deadline, "the sweep never reached the point to interrupt"
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)  # the whole process group, as kill -9 -PGID
    process.wait()


def test_killed_sweep_rerun_equals_uninterrupted(tmp_path):
    whole, broken = tmp_path / "whole", tmp_path / "broken"
    result = cli(*SWEEP, f"hydra.sweep.dir={whole}", env=ENV)
    assert result.returncode == 0, result.stderr[-3000:]

    with open(tmp_path / "killed.log", "w") as log:
        process = subprocess.Popen(
            [*ATTNBENCH, *SWEEP, f"hydra.sweep.dir={broken}"],
            env={**os.environ, **ENV},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, killed as one
        )

        def second_job_checkpointed() -> bool:
            jobs = list(_jobs(broken).values())
            return (
                len(jobs) >= 2
                and (jobs[0] / "summary.json").is_file()
                and (jobs[1] / "checkpoints" / "last.ckpt").is_file()
            )

        _kill_when(process, second_job_checkpointed)
    jobs = list(_jobs(broken).values())
    assert not (jobs[1] / "summary.json").exists(), "the second job finished before the kill"
    first_summary = (jobs[0] / "summary.json").stat().st_mtime_ns

    rerun = cli(*SWEEP, f"hydra.sweep.dir={broken}", env=ENV)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert rerun.stdout.count("finished already, skipped") == 1, rerun.stdout
    assert (jobs[0] / "summary.json").stat().st_mtime_ns == first_summary
    assert "Restoring states from the checkpoint" in rerun.stdout + rerun.stderr
    # the resumed job's summary counts the killed call's time up to its checkpoint
    assert json.loads((jobs[1] / "summary.json").read_text())["earlier_wall_seconds"] > 0
    for job in _jobs(whole).values():
        assert json.loads((job / "summary.json").read_text())["earlier_wall_seconds"] == 0

    assert list(_jobs(whole)) == list(_jobs(broken))
    for name, job in _jobs(whole).items():
        assert _metrics(broken / name) == _metrics(job), name
        # resuming neither lost nor repeated logged rows
        assert _history(broken / name) == _history(job), name


def _quick(tmp_path: Path, *extra: str):
    from attnbench.train import run

    overrides = ["trainer.fast_dev_run=true", "trainer.accelerator=cpu", "logger=none"]
    return run(compose([*overrides, *extra], tmp_path))


def test_finished_jobs_skip_failed_and_changed_ones_run(tmp_path):
    first = _quick(tmp_path)
    summary_file = tmp_path / "summary.json"
    stamp = summary_file.stat().st_mtime_ns
    assert _quick(tmp_path)["wall_seconds"] == first["wall_seconds"]  # skipped: same summary
    assert summary_file.stat().st_mtime_ns == stamp

    diverged = {**json.loads(summary_file.read_text()), "status": "diverged"}
    summary_file.write_text(json.dumps(diverged))
    assert _quick(tmp_path)["status"] == "diverged"  # done too: not run again

    for status in ("failed", "ok"):  # failed: run again; ok with another config: run again
        summary_file.write_text(json.dumps({**diverged, "status": status}))
        extra = ["seed=5"] if status == "ok" else []
        again = _quick(tmp_path, *extra)
        assert again["status"] == "ok" and again["wall_seconds"] != first["wall_seconds"]

    stamp = summary_file.stat().st_mtime_ns
    _quick(tmp_path, "seed=5", "skip_done=false")
    assert summary_file.stat().st_mtime_ns != stamp  # skip_done=false runs it anyway


def test_last_checkpoint_is_taken_at_an_epoch_end_only(tmp_path):
    """Validation every 2 steps of a 5-step epoch: a checkpoint after the step-4 validation
    would resume by replaying the epoch's first batches; last.ckpt must hold step 5."""
    import torch

    run = tmp_path / "run"
    done = cli(
        "experiment=sentiment_quick",
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=5",
        "trainer.limit_val_batches=1",
        "trainer.limit_test_batches=1",
        "+trainer.val_check_interval=2",
        "logger=none",
        f"hydra.run.dir={run}",
    )
    assert done.returncode == 0, done.stderr[-2000:]
    saved = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert saved["global_step"] == 5
