"""``attnbench report``: aggregate the summary.json files of runs (a sweep's directory, or
several) into one table: a metric's mean ± std over the runs of each group (seeds), with
parameter count and wall time per run. Runs that failed or diverged, jobs that left no
summary (killed, never ran) and runs without a value for the metric are listed under it.
--plot draws the groups; --html writes an offline page with the table, the plot, each run's
learning curves and its attention maps. A study's output directory (``attnbench study``)
is reported as the study wrote it: its table, verdict and, with --html, its page.

    attnbench report multirun/2026-11-21 --metric test/acc --pivot model.name
    attnbench report multirun/2026-11-21 --group attention.window --plot window --html report.html
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import statistics
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from attnbench.analysis.plot import (
    curve_metric,
    field,
    group_order,
    known_fields,
    natural,
    report_figure,
    save,
    svg_bytes,
)
from attnbench.registry import ConfigError, suggest
from attnbench.sweep import job_outcomes

DEFAULT_GROUP = "task.name,task.dataset,model.name"


@dataclass
class Run:
    path: Path  # its summary.json
    directory: str  # as listed: relative to the directory given (prefixed by it if several)
    summary: dict[str, Any]

    @property
    def status(self) -> str:
        return str(self.summary.get("status") or "ok")  # older summaries have no status


@dataclass
class Runs:
    """What the given directories hold: readable summaries (any status) and the jobs that
    left none, as ``(status, directory, reason)`` lines."""

    runs: list[Run] = dataclasses.field(default_factory=list)
    missing: list[tuple[str, str, str]] = dataclasses.field(default_factory=list)

    @property
    def ok(self) -> list[Run]:
        return [r for r in self.runs if r.status == "ok"]

    def left_out(self) -> list[tuple[str, str, str]]:
        """Runs kept out of the means (not ok) and missing jobs, in directory order."""
        bad = [
            (r.status, r.directory, str(r.summary.get("reason") or "no reason recorded"))
            for r in self.runs
            if r.status != "ok"
        ]
        return sorted(bad + self.missing, key=lambda line: natural(line[1]))


def find_summaries(paths: list[Path]) -> list[Path]:
    found = []
    for path in paths:
        if path.is_file():
            found.append(path)
        elif path.is_dir():
            found.extend(sorted(path.rglob("summary.json")))
        else:
            raise ConfigError(
                f"{path}: no such file or directory; give run or sweep "
                "directories (e.g. multirun/2026-11-21)"
            )
    return found


def load(path: Path) -> dict[str, Any] | None:
    """A summary, or None with a note saying why it is skipped."""
    try:
        summary = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        print(f"attnbench report: skipping {path}: {e}", file=sys.stderr)
        return None
    if not isinstance(summary, dict):
        print(f"attnbench report: skipping {path}: not a JSON object", file=sys.stderr)
        return None
    return summary


def collect(paths: list[Path]) -> Runs:
    """Every run under ``paths`` (each summary read once, even if two paths overlap), and
    the Hydra job directories there with no summary.json."""
    collected, seen = Runs(), set()

    def label(given: Path, directory: Path) -> str:
        relative = directory.relative_to(given)
        if relative == Path("."):
            return str(given)
        return str(given / relative) if len(paths) > 1 else str(relative)

    for given in paths:
        summaries = find_summaries([given])
        missing = []
        if given.is_dir():
            missing = [
                (status, label(given, job), reason)
                for job, (status, reason) in job_outcomes(given).items()
                if status == "missing" and not (job / "summary.json").exists()
            ]  # an unreadable summary.json is skipped with a note instead
            if not summaries and not missing:
                raise ConfigError(
                    f"{given}: holds no run (no summary.json, no job directory); point at "
                    "the directories runs wrote (outputs/ or multirun/)"
                )
        collected.missing += missing
        for path in summaries:
            if path.resolve() in seen:
                continue
            seen.add(path.resolve())
            summary = load(path)
            if summary is not None:
                directory = label(given, path.parent) if given.is_dir() else str(path.parent)
                collected.runs.append(Run(path, directory, summary))
    return collected


def finite(value: Any) -> float | None:
    """A metric's value, or None where there is none (null, NaN from older summaries)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def mean_std(values: list[float]) -> tuple[float, float]:
    mean = statistics.fmean(values)
    return mean, (statistics.stdev(values) if len(values) > 1 else math.nan)


def fmt(mean: float, std: float, scale: float) -> str:
    digits = 1 if scale == 100 else 3
    if math.isnan(std):
        return f"{mean * scale:.{digits}f}"
    return f"{mean * scale:.{digits}f} ± {std * scale:.{digits}f}"


def seed_order(seed: Any) -> tuple:
    """Seeds sort numerically; a missing or odd one goes last instead of failing."""
    if isinstance(seed, (int, float)) and not isinstance(seed, bool):
        return (0, seed, "")
    return (1, 0, str(seed))


def plugin_settings(summary: dict[str, Any]) -> dict[str, Any]:
    """Flat ``kind.param -> value`` of every plugin setting a run used."""
    return {
        f"{kind}.{k}": json.dumps(v, sort_keys=True)
        for kind, params in (summary.get("plugins") or {}).items()
        if isinstance(params, dict)
        for k, v in params.items()
    }


def warn_if_mixed(group: dict[str, Any], runs: list[dict[str, Any]]) -> None:
    """Pooling is meant for seeds: say so when a group mixes other settings or repeats a
    seed (e.g. an older sweep under the same directory)."""
    label = ", ".join(f"{k}={v}" for k, v in group.items())
    settings = [plugin_settings(r) for r in runs]
    differ = sorted(k for k in set().union(*settings) if len({s.get(k) for s in settings}) > 1)
    if differ:
        print(
            f"attnbench report: {label}: pooled runs differ in {', '.join(differ)}; "
            "add them to --group to separate them",
            file=sys.stderr,
        )
    seeds = [r.get("seed") for r in runs]
    if len(set(map(str, seeds))) < len(seeds):
        print(
            f"attnbench report: {label}: seed repeated among {sorted(seeds, key=seed_order)}; "
            "point at one sweep's directory or add a field to --group",
            file=sys.stderr,
        )


def typical(values: list[Any], how: Any) -> float:
    """``how`` (median, mean) of the numbers among ``values``; NaN when there is none."""
    numbers = [v for v in map(finite, values) if v is not None]
    return how(numbers) if numbers else math.nan


def run_wall_seconds(summary: dict[str, Any]) -> float | None:
    """A run's wall time, with the interrupted calls it resumed (to their checkpoint)."""
    wall = finite(summary.get("wall_seconds"))
    return None if wall is None else wall + (finite(summary.get("earlier_wall_seconds")) or 0.0)


def aggregate(
    runs: list[Run], metric: str, group: list[str]
) -> tuple[list[dict[str, Any]], list[str]]:
    """Rows of the table from ok runs, and the directories of those whose value of
    ``metric`` is null (counted as missing, never as a number)."""
    pooled: dict[tuple, list[tuple[dict[str, Any], float]]] = defaultdict(list)
    no_value = []
    for run in runs:
        metrics = run.summary.get("metrics") or {}
        if metric not in metrics:
            print(
                f"attnbench report: skipping {run.path}: no {metric} (it has "
                f"{', '.join(sorted(metrics)) or 'no metrics'})",
                file=sys.stderr,
            )
            continue
        value = finite(metrics[metric])
        if value is None:
            no_value.append(run.directory)
            continue
        pooled[tuple(field(run.summary, k) for k in group)].append((run.summary, value))
    rows = []
    for key, members in sorted(pooled.items(), key=lambda kv: group_order(kv[0])):
        members.sort(key=lambda member: seed_order(member[0].get("seed")))
        summaries = [s for s, _ in members]
        warn_if_mixed(dict(zip(group, key)), summaries)
        mean, std = mean_std([v for _, v in members])
        rows.append(
            {
                **dict(zip(group, key)),
                "n": len(members),
                "mean": mean,
                "std": std,
                "seeds": [s.get("seed") for s in summaries],
                "values": [v for _, v in members],  # one per seed, in that order
                "params": typical([s.get("params") for s in summaries], statistics.median),
                "wall_s": typical([run_wall_seconds(s) for s in summaries], statistics.fmean),
            }
        )
    return rows, sorted(no_value, key=natural)


def number(value: float, spec: str) -> str:
    """A table cell; "–" where no run recorded the number."""
    return "–" if math.isnan(value) else format(value, spec)


def markdown(header: list[str], body: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in body]
    return "\n".join(lines)


Table = tuple[list[str], list[list[str]]]  # header, body: the cells as printed


def long_table(rows: list[dict[str, Any]], group: list[str], metric: str, scale: float) -> Table:
    header = [*group, f"{metric} (mean ± std)", "runs", "params", "wall s/run"]
    body = [
        [str(r[k]) for k in group]
        + [
            fmt(r["mean"], r["std"], scale),
            str(r["n"]),
            number(r["params"], ",.0f"),
            number(r["wall_s"], ".0f"),
        ]
        for r in rows
    ]
    return header, body


def pivot_table(rows: list[dict[str, Any]], group: list[str], pivot: str, scale: float) -> Table:
    """One row per remaining group key, one column per value of ``pivot``."""
    rest = [k for k in group if k != pivot]
    columns = list(dict.fromkeys(r[pivot] for r in rows))
    cells: dict[tuple, dict[Any, str]] = defaultdict(dict)
    for r in rows:
        cells[tuple(r[k] for k in rest)][r[pivot]] = (
            f"{fmt(r['mean'], r['std'], scale)} (n={r['n']}, {number(r['wall_s'], '.0f')} s)"
        )
    body = [[*map(str, key), *(cells[key].get(c, "–") for c in columns)] for key in cells]
    return [*rest, *map(str, columns)], body


def notes(left_out: list[tuple[str, str, str]], no_value: list[str], metric: str) -> list[str]:
    """The lines under the table: one per run kept out of it, and the runs with no value."""
    lines = [f"- {status}: {directory}: {reason}" for status, directory, reason in left_out]
    if no_value:
        runs = "1 run" if len(no_value) == 1 else f"{len(no_value)} runs"
        lines.append(f"- {runs} had no value for {metric}: {', '.join(no_value)}")
    return lines


def known(runs: list[Run], what: str) -> list[str]:
    """Metric names, or group fields (``kind.param`` and top-level keys), the runs have."""
    if what != "metrics":
        return known_fields([run.summary for run in runs])
    return sorted({name for run in runs for name in run.summary.get("metrics") or {}})


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="attnbench report", description=__doc__.split("\n\n")[0])
    p.add_argument("paths", nargs="+", type=Path, help="run/sweep directories or summary.json")
    p.add_argument("--metric", default="test/acc", help="metric to aggregate (default test/acc)")
    p.add_argument(
        "--group",
        default=DEFAULT_GROUP,
        help=f"comma-separated fields that make a group (default {DEFAULT_GROUP}); "
        "runs differing only in other fields (seed) are pooled",
    )
    p.add_argument(
        "--pivot", default="", help="a group field to spread over columns, e.g. model.name"
    )
    p.add_argument("--percent", action="store_true", help="print the metric x100")
    p.add_argument(
        "--json",
        type=Path,
        help="also write the rows, the runs left out and those with no value to this JSON file",
    )
    p.add_argument(
        "--plot",
        type=Path,
        metavar="FILE",
        help="also draw the groups to FILE.png and FILE.svg: bars with ± std error bars, or "
        "lines with ± std bands along a numeric group field (the --pivot, else the last)",
    )
    p.add_argument(
        "--html",
        type=Path,
        metavar="FILE",
        help="also write one self-contained page (works offline): the table, the plot, each "
        "run's learning curves and its attention maps where `attnbench maps` wrote them",
    )
    return p


def main(argv: list[str] | None = None) -> None:
    """Prints the table; exit status 0 whenever it could report (failed runs included), a
    one-line ConfigError (exit 2) for a path with no run or a misspelled metric or field."""
    args = parser().parse_args(argv)
    group = [k.strip() for k in args.group.split(",") if k.strip()]
    if args.pivot and args.pivot not in group:
        raise ConfigError(
            f"--pivot {args.pivot} is not one of the --group fields "
            f"({', '.join(group)}); add it to --group"
        )
    collected = collect(args.paths)
    if not collected.runs and not collected.missing:
        raise ConfigError(
            f"no readable summary.json under {', '.join(map(str, args.paths))}; "
            "point at the directories runs wrote (outputs/ or multirun/)"
        )
    ok = collected.ok
    if ok and args.metric not in known(collected.runs, "metrics"):
        raise ConfigError(
            f"none of the {len(collected.runs)} summary.json files has "
            f"{args.metric!r}; {suggest(args.metric, known(collected.runs, 'metrics'))}"
        )
    rows, no_value = aggregate(ok, args.metric, group)
    for key in group:
        if rows and all(r[key] is None for r in rows):
            raise ConfigError(
                f"no run has the --group field {key!r}; {suggest(key, known(ok, 'fields'))}"
            )
    scale = 100.0 if args.percent else 1.0
    if args.pivot:
        table = pivot_table(rows, group, args.pivot, scale)
    else:
        table = long_table(rows, group, args.metric, scale)
    print(markdown(*table))
    left_out = collected.left_out()
    lines = notes(left_out, no_value, args.metric)
    if lines:
        print("\n" + "\n".join(lines))  # a blank line first: Markdown ends the table there
    figure = None
    if (args.plot or args.html) and rows:
        figure = report_figure(rows, group, args.metric, scale, args.pivot)
    if args.plot:
        if figure is None:
            print("attnbench report: no --plot: no group has a value to draw", file=sys.stderr)
        else:
            written = save(figure, args.plot)
            print(f"attnbench report: wrote {' and '.join(map(str, written))}", file=sys.stderr)
    if args.html:
        from attnbench.analysis.report_html import write_html

        write_html(
            args.html,
            title=f"attnbench report: {args.metric}",
            sources=[str(p) for p in args.paths],
            table=table,
            notes=[line.removeprefix("- ") for line in lines],
            plot_svg=None if figure is None else svg_bytes(figure),
            runs=[(run.directory, run.path.parent, run.summary) for run in collected.runs],
            metric=curve_metric(args.metric),
        )
        print(f"attnbench report: wrote {args.html}", file=sys.stderr)
    if args.json:
        clean = [
            {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()}
            for r in rows
        ]  # strict JSON: no NaN
        report = {
            "metric": args.metric,
            "rows": clean,
            "left_out": [{"status": s, "run": d, "reason": reason} for s, d, reason in left_out],
            "no_value": no_value,
        }
        args.json.write_text(json.dumps(report, indent=2, default=str) + "\n")
