"""``attnbench report STUDY_DIR [--html FILE]``: a study's output directory reported as the
study wrote it (its table, verdict and figure), read back from its results.json. Any other
directory goes to :func:`attnbench.report.main`. Its own module, so the runs report never
imports the study package."""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from attnbench import registry, report
from attnbench.registry import ConfigError
from attnbench.study.base import Results, Verdict
from attnbench.study.plugin import Study
from attnbench.study.write import FIGURE, Written, table, write_html_page


def main(argv: list[str]) -> None:
    """``attnbench report``: a study's directory as written, anything else as runs."""
    args = report.parser().parse_args(argv)
    study = saved_study(args.paths[0]) if len(args.paths) == 1 else None
    if study is None:
        report.main(argv)
        return
    refuse_options_for_a_study(args)
    report_study(study, args.paths[0], args.html)


def refuse_options_for_a_study(args: argparse.Namespace) -> None:
    """A study directory is reported as the study wrote it (its groups, metrics, figure and
    results.json); regrouping it is a report of its runs."""
    defaults = report.parser()
    given = [
        flag
        for flag in ("--group", "--metric", "--pivot", "--percent", "--plot", "--json")
        if getattr(args, flag[2:]) != defaults.get_default(flag[2:])
    ]
    if given:
        where = args.paths[0]
        runs = where / "runs"
        fix = (
            f"to regroup its runs, run `attnbench report {runs} {given[0]} ...`"
            if runs.is_dir()
            else "its run directories are not here"
        )
        raise ConfigError(
            f"{where} is a study's output: it is reported as written (only --html applies), "
            f"so {given[0]} does nothing there; {fix}"
        )


def saved_study(out: Path) -> Written | None:
    """The study written to ``out`` (read back from its results.json), so ``attnbench
    report`` can render it; None when ``out`` holds no study's results."""
    path = out / "results.json"
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None  # not a study's file (or none): reported as runs
    if not isinstance(data, dict) or not {"study", "verdict", "rows"} <= data.keys():
        return None
    rows = data["rows"] if isinstance(data["rows"], list) else [None]
    needed = ("sweep", "metric", "n", "mean")
    bad = [k for r in rows for k in needed if not isinstance(r, dict) or k not in r][:1]
    if bad:
        raise ConfigError(f"{path}: a row lacks {bad[0]!r}; run the study again")
    for row in rows:  # strict JSON wrote NaN as null
        row["mean"] = math.nan if row["mean"] is None else row["mean"]
        row["std"] = math.nan if row.get("std") is None else row["std"]
    study = Study()  # the claim, rule and table format as written, with or without the plugin
    study.claim, study.rule = data.get("claim", ""), data.get("rule", "")
    study.percent = data.get("percent", registered_percent(data["study"]))
    return Written(
        name=data["study"],
        study=study,
        results=Results(rows, data.get("failed", [])),
        verdict=Verdict(data["verdict"], data.get("numbers") or {}, data.get("summary", "")),
        commands=[line.split(" ") for line in data.get("sweeps", [])],
        command=data.get("command", ""),
        quick=bool(data.get("quick")),
        seeds=int(data.get("seeds") or 0),
        wall_seconds=float(data.get("wall_seconds") or 0.0),
        run_seconds=float(data.get("run_seconds") or 0.0),
    )


def registered_percent(name: str) -> bool:
    """Whether the study plugin shows rates x100 (results.json written before it recorded
    that); True, the default, when the plugin is not installed here."""
    try:
        return bool(registry.get("study", name).cls.percent)
    except registry.AttnbenchError:
        return True


def newer_runs(out: Path) -> list[Path]:
    """Run summaries written after the study's results.json: a later call that stopped
    before writing its report."""
    written = (out / "results.json").stat().st_mtime
    return [p for p in (out / "runs").rglob("summary.json") if p.stat().st_mtime > written]


def report_study(w: Written, out: Path, html: Path | None) -> None:
    """``attnbench report STUDY_DIR [--html FILE]``: the study's table and verdict, and its
    page (the figure it drew, every run's curves) when asked."""
    header, body = table(w.results, w.study)
    stale = newer_runs(out)
    if stale:
        print(
            f"attnbench report: {len(stale)} run(s) under {out / 'runs'} are newer than this "
            f"report (e.g. {stale[0].parent}); run the study again to include them",
            file=sys.stderr,
        )
    print(f"Study {w.name}: {w.study.claim}\n")
    print(report.markdown(header, body) if body else "(no run gave a number)")
    print(f"\nVerdict: {w.verdict.verdict}. {w.verdict.summary}")
    if html is not None:
        figure = out / f"{FIGURE}.svg"
        write_html_page(w, out, html, figure.read_bytes() if figure.is_file() else None)
        print(f"attnbench report: wrote {html}", file=sys.stderr)
