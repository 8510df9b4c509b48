"""The end of a sweep: one line per job that failed, diverged or left no summary.

A Hydra callback (registered in conf/config.yaml), so it runs once in the process that
launched the sweep, whichever launcher ran the jobs. The CLI exits non-zero when it found
any (``failed_jobs``)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback

failed_jobs: list[str] = []


def job_outcomes(sweep_dir: Path) -> dict[Path, tuple[str, str]]:
    """Each job directory under a sweep (those holding .hydra/) -> (status, reason)."""
    outcomes = {}
    for hydra_dir in sorted(sweep_dir.rglob(".hydra")):
        job = hydra_dir.parent
        summary = job / "summary.json"
        if not summary.is_file():
            outcomes[job] = ("missing", "no summary.json: the job was killed or never ran")
            continue
        try:
            data = json.loads(summary.read_text())
        except (OSError, ValueError) as e:
            outcomes[job] = ("missing", f"summary.json unreadable ({type(e).__name__})")
            continue
        outcomes[job] = (data.get("status", "ok"), data.get("reason") or "")
    return outcomes


class SweepReport(Callback):
    def on_multirun_start(self, config: Any, **kwargs: Any) -> None:
        failed_jobs.clear()

    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        for job, (status, reason) in job_outcomes(sweep_dir).items():
            if status != "ok":
                failed_jobs.append(str(job))
                print(f"attnbench: {status}: {job}: {reason}", file=sys.stderr)
        if failed_jobs:
            print(
                f"attnbench: {len(failed_jobs)} job(s) of the sweep did not finish ok",
                file=sys.stderr,
            )
