"""How much work N one-thread processes get done side by side, relative to one alone.

    python tools/core_ceiling.py [--processes 2] [--seconds 5]

The launcher and DDP benchmarks compare N one-thread processes with one process; their best
possible ratio is this machine's ceiling, which is N only when its cores are really
independent (virtual CPUs can share a physical core or be throttled by the host). Each
process multiplies fixed 256 x 256 matrices with one torch thread for a fixed time and
reports matmuls/s; the ceiling is the sum side by side / the rate of one alone.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

# Every worker imports torch first and then waits for a common start time, so the timed
# seconds overlap exactly: no worker gets a stretch of the machine to itself.
WORKER = """
import sys, time, torch
torch.set_num_threads(1)
a = torch.randn(256, 256)
start, seconds = float(sys.argv[1]), float(sys.argv[2])
time.sleep(max(0.0, start - time.time()))
deadline, n = time.time() + seconds, 0
while time.time() < deadline:
    a @ a
    n += 1
print(n / seconds)
"""


def rates(processes: int, seconds: float) -> list[float]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    start = str(time.time() + 3.0 + processes)  # after every worker has imported torch
    command = [sys.executable, "-c", WORKER, start, str(seconds)]
    running = [
        subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
        )
        for _ in range(processes)
    ]
    found = []
    for worker in running:
        out, err = worker.communicate()
        if worker.returncode != 0:
            sys.exit(f"core_ceiling: a worker failed: {err.strip().splitlines()[-1:]}")
        found.append(float(out))
    return found


def ceiling(processes: int = 2, seconds: float = 5.0) -> float:
    """Work per second of ``processes`` one-thread processes together / of one alone."""
    alone = rates(1, seconds)[0]
    return sum(rates(processes, seconds)) / alone


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args(argv)
    print(f"load average {os.getloadavg()[0]:.2f}")
    print(
        f"{args.processes} one-thread processes side by side do "
        f"{ceiling(args.processes, args.seconds):.2f}x the work of one alone"
    )


if __name__ == "__main__":
    main()
