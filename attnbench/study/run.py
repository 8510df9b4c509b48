"""Run a study: each of its sweeps as one ``attnbench -m`` subprocess (Hydra's multirun, so
``hydra/launcher=joblib`` and the other launchers pass straight through), then read the run
directories the jobs wrote into :class:`Results`.

Every sweep writes into the same folder on every call (``<out>/runs/<sweep>``, job folders
named by Hydra from the job number and overrides), so re-running a study re-runs the same
jobs there: the harness skips a job whose summary.json matches its config and resumes one
that left a checkpoint (``skip_done``, attnbench.checkpoints).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from attnbench.registry import AttnbenchError, ConfigError, one_line
from attnbench.report import Run, aggregate, collect, run_wall_seconds
from attnbench.study.base import Results, Sweep
from attnbench.study.plugin import Study

NOT_RUN = "not run"  # a sweep's jobs that never started
# Jobs a re-run finishes (never started, or stopped before their summary.json: killed, out of
# memory): while any is left the study's verdict is withheld. A job that failed with an error
# recorded, or diverged, is a result the report lists, not a gap.
UNFINISHED = (NOT_RUN, "missing")
EXTRA_FILE = "study_metrics.json"  # a run's cached run_metrics(), beside its summary.json


@dataclass
class Outcome:
    results: Results
    commands: list[list[str]] = field(default_factory=list)  # the multirun commands run
    run_seconds: float = 0.0  # this call's jobs' own wall time, summed


def override_key(override: str) -> str:
    """``+model.x=1`` -> ``model.x``; ``hydra/launcher=joblib`` -> ``hydra/launcher``."""
    return override.partition("=")[0].lstrip("+~")


def sweep_overrides(
    sweep: Sweep, seeds: list[int], user: list[str], gpu: bool, sweep_dir: Path
) -> list[str]:
    """The multirun's overrides: the sweep's own, its axes, the seeds, then the user's,
    where a user override replaces the sweep's setting of the same key (so ``model=cnn``
    narrows a sweep over models instead of clashing with it)."""
    chosen: dict[str, str] = {}
    for item in sweep.overrides:
        chosen[override_key(item)] = item
    for key, values in sweep.axes.items():
        chosen[key] = f"{key}={','.join(str(v) for v in values)}"
    chosen["seed"] = "seed=" + ",".join(map(str, seeds))
    if gpu:
        chosen.setdefault("trainer", "trainer=gpu")
    for item in user:
        chosen[override_key(item)] = item
    quoted = str(sweep_dir).replace("\\", "\\\\").replace("'", "\\'")
    # job folders named by what varies only: every fixed override in the name can pass the
    # 255-byte file-name limit (conf/config.yaml's own exclusions kept)
    fixed = [k for k in map(override_key, sweep.overrides) if k not in sweep.axes]
    hidden = ",".join(dict.fromkeys(["seed", "ckpt_path", "trainer.max_epochs", *fixed]))
    return [
        *chosen.values(),
        f"hydra.job.config.override_dirname.exclude_keys=[{hidden}]",
        f"hydra.sweep.dir='{quoted}'",
    ]


def expected_jobs(args: list[str]) -> int | None:
    """How many jobs a multirun of ``args`` launches, read by Hydra's own override parser
    (as its basic sweeper does): the product of the sweeps' lengths; None when a sweep
    cannot be listed (glob(), an interval for a sweeper plugin)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    count = 1
    for override in OverridesParser.create().parse_overrides(args):
        if override.is_sweep_override():
            try:
                count *= len(list(override.sweep_iterator()))
            except Exception:  # glob() needs the config's choices, intervals are continuous
                return None
    return count


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def run_sweep(args: list[str], sweep_dir: Path) -> int:
    """``python -m attnbench -m ARGS``, its output passed through; the exit status."""
    command = [sys.executable, "-m", "attnbench", "-m", *args]
    print(f"attnbench study: {' '.join(command[1:])}", file=sys.stderr, flush=True)
    sweep_dir.mkdir(parents=True, exist_ok=True)
    return subprocess.run(command, check=False).returncode


def cached_run_metrics(study: Study, run: Run) -> dict[str, float]:
    """``study.run_metrics`` of one run, computed once per checkpoint and kept beside it."""
    run_dir = run.path.parent
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    stamp = ckpt.stat().st_mtime_ns if ckpt.is_file() else None
    cache = run_dir / EXTRA_FILE
    key = {"study": getattr(study, "plugin_name", type(study).__name__), "checkpoint": stamp}
    if cache.is_file():
        try:
            saved = json.loads(cache.read_text())
            if saved.get("key") == key:
                return dict(saved["metrics"])
        except (OSError, ValueError, KeyError):
            pass  # recomputed below
    metrics = study.run_metrics(run_dir)
    if metrics:
        tmp = cache.with_suffix(".tmp")
        tmp.write_text(json.dumps({"key": key, "metrics": metrics}, indent=2) + "\n")
        os.replace(tmp, cache)
    return metrics


def jobs_since(sweep_dir: Path, started: float) -> set[Path]:
    """The job directories a multirun started at ``started`` ran (or skipped as done): Hydra
    rewrites each job's .hydra/ when the job starts. Folders of earlier calls with other
    seeds, --quick or other overrides keep older ones and stay out of this call's numbers."""
    return {
        f.parent.parent.resolve()
        for f in sweep_dir.rglob(".hydra/overrides.yaml")
        if f.stat().st_mtime >= started - 1.0  # file systems round mtimes
    }


def sweep_results(
    study: Study, sweep: Sweep, sweep_dir: Path, jobs: set[Path] | None = None
) -> Results:
    """The rows of one sweep's ok runs (summary metrics plus run_metrics) and its failures;
    only the runs in ``jobs`` (this call's job directories) when given."""
    failed: list[dict[str, str]] = []
    try:
        found = collect([sweep_dir])
    except AttnbenchError as e:  # the sweep wrote no job at all
        return Results([], [{"status": "missing", "run": str(sweep_dir), "reason": str(e)}])
    if jobs is not None:
        found.runs = [r for r in found.runs if r.path.parent.resolve() in jobs]
        found.missing = [m for m in found.missing if (sweep_dir / m[1]).resolve() in jobs]
    for status, directory, reason in found.left_out():
        failed.append({"status": status, "run": f"{sweep.name}/{directory}", "reason": reason})
    ok = found.ok
    for run in ok:
        try:
            extra = cached_run_metrics(study, run)
        except Exception as e:  # one run's analysis failing must not stop the study
            failed.append(
                {
                    "status": "analysis failed",
                    "run": f"{sweep.name}/{run.directory}",
                    "reason": one_line(e),
                }
            )
            continue
        run.summary = {**run.summary, "metrics": {**run.summary.get("metrics", {}), **extra}}
    rows: list[dict[str, Any]] = []
    for metric in study.table_metrics():
        having = [r for r in ok if metric in (r.summary.get("metrics") or {})]
        table, _ = aggregate(having, metric, sweep.group)
        rows += [{"sweep": sweep.name, "metric": metric, **row} for row in table]
    return Results(rows, failed)


def measures(study: Study) -> bool:
    """Whether the study measures (its own :meth:`Study.measure`) instead of sweeping."""
    return type(study).measure is not Study.measure


def run_study(study: Study, out: Path, quick: bool, seeds: int | None, user: list[str]) -> Outcome:
    """Run (or resume) every sweep of ``study`` under ``out/runs`` and gather the numbers.
    A sweep whose jobs fail still yields the others' rows; the failures are listed."""
    n_seeds = seeds or (study.quick_seeds if quick else study.seeds)
    gpu = cuda_available()
    if measures(study) and (user or seeds is not None):
        given = " ".join([*user, *([f"--seeds {seeds}"] if seeds is not None else [])])
        raise ConfigError(
            f"study {getattr(study, 'plugin_name', study)!r} measures instead of training "
            f"(no sweep, no seeds): {given!r} would change nothing; run it without them"
        )
    measured = study.measure(out, quick, "cuda" if gpu else "cpu")
    if measured is not None:
        return Outcome(measured, run_seconds=measured.seconds or 0.0)
    sweeps = study.sweeps(quick)
    if not sweeps:
        raise AttnbenchError(
            f"study {getattr(study, 'plugin_name', study)!r} declares no sweep and measures "
            "nothing; its sweeps() or measure() must return something"
        )
    outcome, counted = Outcome(Results([])), set()
    for sweep in sweeps:
        sweep_dir = out / "runs" / sweep.name
        args = sweep_overrides(sweep, list(range(1, n_seeds + 1)), user, gpu, sweep_dir)
        started = time.time()
        status = run_sweep(args, sweep_dir)
        outcome.commands.append(["attnbench", "-m", *args])
        jobs = jobs_since(sweep_dir, started) if sweep_dir.is_dir() else set()
        if status == 2 and not jobs:
            # refused before any job ran: a bad override, which every sweep would repeat
            raise AttnbenchError(
                f"sweep {sweep.name!r} was refused before any job ran (exit 2, see the "
                "error above); fix the override it names"
            )
        found = sweep_results(study, sweep, sweep_dir, jobs)
        expected = expected_jobs(args)
        if expected is not None and len(jobs) < expected:  # the multirun itself stopped
            found.failed.append(
                {
                    "status": NOT_RUN,
                    "run": sweep.name,
                    "reason": f"{expected - len(jobs)} of its {expected} jobs never started "
                    f"(the sweep stopped, exit {status}); run the same command again to run "
                    "them (finished jobs are skipped)",
                }
            )
        counted |= jobs
        outcome.results.rows += found.rows
        outcome.results.failed += found.failed
    outcome.run_seconds = run_seconds(counted)
    return outcome


def run_seconds(jobs: set[Path]) -> float:
    """The wall time of this call's jobs, each as its summary records it: the call that
    finished it plus the calls it resumed (to their last checkpoint); a job skipped as done
    keeps its time, and an earlier call's other jobs are not counted."""
    total = 0.0
    for path in (job / "summary.json" for job in jobs):
        try:
            summary = json.loads(path.read_text())
            wall = run_wall_seconds(summary) or 0.0
            # training time survives resumes in every summary (RunStats is checkpointed):
            # the floor for one written before earlier_wall_seconds was recorded
            total += max(wall, float(summary.get("train_seconds") or 0.0))
        except (OSError, ValueError, TypeError):
            continue
    return total
