"""DDP on CPU processes vs one process: per-epoch training samples/s, same total steps.

    .venv/bin/python tools/bench_ddp.py                      # image/digits, 2 processes
    .venv/bin/python tools/bench_ddp.py --processes 2 --epochs 3 -- model.d_model=256
    .venv/bin/python tools/bench_ddp.py --preset "task=longrange model=rnn"

One process trains with batch B, once with every core as torch threads (attnbench's
default) and once with cores // N threads (the share one DDP process gets); DDP runs N
processes with batch B/N each (the same global batch, so the same optimiser steps per
epoch) and cores // N threads each. Samples/s per epoch = training examples of all processes / the
epoch's training seconds (validation excluded), from each run's summary.json. The default
preset, task=image (8x8 digits in memory, a 2-layer d_model 128 transformer), is one where
the forward and backward passes dominate: no data loading or tokenising in the step.
A benchmark, not a test: it prints the machine's load, since a shared machine skews it.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from core_ceiling import ceiling  # tools/, beside this script

ATTNBENCH = str(Path(sys.executable).with_name("attnbench"))
PRESET = "task=image task.dataset=digits model=transformer"


def load() -> str:
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def train(overrides: list[str], run_dir: Path, threads: int | None = None) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}  # threads: harness
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    cmd = [ATTNBENCH, *overrides, f"hydra.run.dir={run_dir}"]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        sys.exit(f"bench_ddp: {' '.join(cmd)} failed:\n{done.stderr[-2000:]}")
    return json.loads((run_dir / "summary.json").read_text())


def per_epoch(summary: dict) -> list[float]:
    """Samples/s of each epoch: every epoch trains on the whole split."""
    seconds = summary["epoch_seconds"]
    samples = summary["train_samples_per_s"] * summary["train_seconds"] / len(seconds)
    return [samples / s for s in seconds]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64, help="global batch")
    parser.add_argument("--preset", default=PRESET, help=f"the run (default: {PRESET})")
    parser.add_argument("overrides", nargs="*", help="more attnbench overrides")
    args = parser.parse_args(argv)
    preset = [*args.preset.split(), "logger=none"]
    common = [*preset, f"trainer.max_epochs={args.epochs}", *args.overrides]
    print(f"cores: {len(os.sched_getaffinity(0))}, {load()}; {' '.join(common)}")
    n = args.processes
    print(
        f"machine ceiling: {n} one-thread processes do {ceiling(n):.2f}x the work of one",
        flush=True,
    )
    with tempfile.TemporaryDirectory() as tmp:
        single = [*common, "trainer=cpu", f"task.batch_size={args.batch_size}"]
        one = train(single, Path(tmp, "one"))
        share = max(1, len(os.sched_getaffinity(0)) // args.processes)
        one_share = train(single, Path(tmp, "one_share"), threads=share)
        ddp = train(
            [
                *common,
                "trainer=ddp_cpu",
                f"trainer.devices={args.processes}",
                f"task.batch_size={args.batch_size // args.processes}",
            ],
            Path(tmp, "ddp"),
        )
    runs = {
        "1 process, all cores": one,
        f"1 process, {share} thread(s)": one_share,
        f"DDP x{args.processes}": ddp,
    }
    speed = {}
    for name, summary in runs.items():
        speeds = per_epoch(summary)
        speed[name] = statistics.median(speeds)
        shown = ", ".join(f"{s:.0f}" for s in speeds)
        print(
            f"{name:>24}: {speed[name]:7.0f} samples/s (median epoch; epochs: {shown})  "
            f"val/acc {summary['metrics'].get('val/acc', float('nan')):.4f}"
        )
    for name in list(runs)[:2]:
        print(f"DDP / {name}: {speed[f'DDP x{args.processes}'] / speed[name]:.2f}x")
    print(f"({load()})")


if __name__ == "__main__":
    main()
