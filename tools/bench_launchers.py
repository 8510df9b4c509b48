"""Wall time of one sweep under Hydra's basic launcher and under joblib (n_jobs=2).

    python tools/bench_launchers.py [--jobs 6] [--epochs 1] [--n-jobs 2] [--out DIR]
    python tools/bench_launchers.py --epochs 8 --preset "experiment=sentiment_quick model=rnn"

Runs the same ``fast`` sweep (default experiment=sentiment_quick, one job per seed) twice as
a user would, through the ``attnbench`` command, and prints both wall times and their ratio
(joblib / basic; issue #16 asks for <= 0.6 on a 2-core CPU). A third sweep, basic with
threads=1, tells how much of the gain is the parallelism and how much the pinning of torch's
threads (joblib's jobs run with cores // n_jobs threads). Each sweep must end with an ok
summary.json per job, else the script fails: a fast failure is no speed-up. Needs
``pip install 'attnbench[launchers]'``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from core_ceiling import ceiling  # tools/, beside this script

PRESET = "experiment=sentiment_quick"


def sweep_command(jobs: int, epochs: int, sweep_dir: Path, preset: str = PRESET) -> list[str]:
    exe = Path(sys.executable).with_name("attnbench")
    command = [str(exe)] if exe.exists() else [sys.executable, "-m", "attnbench"]
    return [
        *command,
        "-m",
        *preset.split(),
        f"seed={','.join(str(s) for s in range(1, jobs + 1))}",
        f"trainer.max_epochs={epochs}",
        "logger=none",
        f"hydra.sweep.dir={sweep_dir}",
    ]


def timed_sweep(name: str, extra: list[str], args: argparse.Namespace, root: Path) -> float:
    sweep_dir = root / name
    command = sweep_command(args.jobs, args.epochs, sweep_dir, args.preset) + extra
    print(f"+ {' '.join(command)}", flush=True)
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"bench_launchers: the {name} sweep failed:\n{done.stderr[-2000:]}")
    statuses = [json.loads(p.read_text())["status"] for p in sweep_dir.glob("*/summary.json")]
    if statuses.count("ok") != args.jobs:
        sys.exit(f"bench_launchers: the {name} sweep left {statuses} (want {args.jobs} x ok)")
    print(f"{name}: {seconds:.1f} s for {args.jobs} jobs", flush=True)
    return seconds


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=6)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--n-jobs", type=int, default=2, help="joblib workers")
    parser.add_argument("--preset", default=PRESET, help=f"the jobs' run (default: {PRESET})")
    parser.add_argument("--out", type=Path, help="keep the sweeps here (default: a temp dir)")
    args = parser.parse_args(argv)
    root = args.out or Path(tempfile.mkdtemp(prefix="bench_launchers_"))
    try:
        print(f"cores: {os.cpu_count()}, load average: {os.getloadavg()[0]:.2f}", flush=True)
        n = args.n_jobs
        print(
            f"machine ceiling: {n} one-thread processes do {ceiling(n):.2f}x the work of one",
            flush=True,
        )
        basic = timed_sweep("basic", [], args, root)
        joblib = timed_sweep(
            f"joblib{args.n_jobs}",
            ["hydra/launcher=joblib", f"hydra.launcher.n_jobs={args.n_jobs}"],
            args,
            root,
        )
        single = timed_sweep("basic_threads1", ["threads=1"], args, root)
        print(f"load average after: {os.getloadavg()[0]:.2f}")
        print(f"ratio joblib/basic: {joblib / basic:.2f} (target <= 0.6)")
        print(f"ratio joblib/basic with threads=1: {joblib / single:.2f}")
    finally:
        if args.out is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
