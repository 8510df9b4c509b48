"""``attnbench report``: aggregate the summary.json files of runs (a sweep's directory, or
several) into one table: a metric's mean ± std over the runs of each group (seeds), with
parameter count and wall time per run.

    attnbench report multirun/2026-11-21 --metric test/acc --pivot model.name
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

from attnbench.registry import ConfigError, suggest

DEFAULT_GROUP = "task.name,task.dataset,model.name"


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


def field(summary: dict[str, Any], key: str) -> Any:
    """A group field: ``model.name`` reads plugins.model.name; other keys (``seed``) are
    read from the top level."""
    plugins = summary.get("plugins", {})
    node: Any = plugins if key.split(".")[0] in plugins else summary
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def mean_std(values: list[float]) -> tuple[float, float]:
    mean = statistics.fmean(values)
    return mean, (statistics.stdev(values) if len(values) > 1 else math.nan)


def fmt(mean: float, std: float, scale: float) -> str:
    digits = 1 if scale == 100 else 3
    if math.isnan(std):
        return f"{mean * scale:.{digits}f}"
    return f"{mean * scale:.{digits}f} ± {std * scale:.{digits}f}"


def plugin_settings(summary: dict[str, Any]) -> dict[str, Any]:
    """Flat ``kind.param -> value`` of every plugin setting a run used."""
    return {
        f"{kind}.{k}": json.dumps(v, sort_keys=True)
        for kind, params in summary.get("plugins", {}).items()
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
    if len(set(seeds)) < len(seeds):
        print(
            f"attnbench report: {label}: seed repeated among {sorted(seeds)}; point at one "
            "sweep's directory or add a field to --group",
            file=sys.stderr,
        )


def aggregate(summaries: list[Path], metric: str, group: list[str]) -> list[dict[str, Any]]:
    runs: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for path in summaries:
        try:
            summary = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            print(f"attnbench report: skipping {path}: {e}", file=sys.stderr)
            continue
        if metric not in summary.get("metrics", {}):
            print(
                f"attnbench report: skipping {path}: no {metric} (it has "
                f"{', '.join(sorted(summary.get('metrics', {}))) or 'no metrics'})",
                file=sys.stderr,
            )
            continue
        runs[tuple(field(summary, k) for k in group)].append(summary)
    rows = []
    for key, group_runs in sorted(runs.items(), key=lambda kv: tuple(map(str, kv[0]))):
        warn_if_mixed(dict(zip(group, key)), group_runs)
        values = [r["metrics"][metric] for r in group_runs]
        mean, std = mean_std(values)
        rows.append(
            {
                **dict(zip(group, key)),
                "n": len(values),
                "mean": mean,
                "std": std,
                "seeds": sorted(r.get("seed") for r in group_runs),
                "params": statistics.median(r.get("params", math.nan) for r in group_runs),
                "wall_s": statistics.fmean(r.get("wall_seconds", math.nan) for r in group_runs),
            }
        )
    return rows


def markdown(header: list[str], body: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in body]
    return "\n".join(lines)


def long_table(rows: list[dict[str, Any]], group: list[str], metric: str, scale: float) -> str:
    header = [*group, f"{metric} (mean ± std)", "runs", "params", "wall s/run"]
    body = [
        [str(r[k]) for k in group]
        + [
            fmt(r["mean"], r["std"], scale),
            str(r["n"]),
            f"{r['params']:,.0f}",
            f"{r['wall_s']:.0f}",
        ]
        for r in rows
    ]
    return markdown(header, body)


def pivot_table(rows: list[dict[str, Any]], group: list[str], pivot: str, scale: float) -> str:
    """One row per remaining group key, one column per value of ``pivot``."""
    rest = [k for k in group if k != pivot]
    columns = list(dict.fromkeys(r[pivot] for r in rows))
    cells: dict[tuple, dict[Any, str]] = defaultdict(dict)
    for r in rows:
        cells[tuple(r[k] for k in rest)][r[pivot]] = (
            f"{fmt(r['mean'], r['std'], scale)} (n={r['n']}, {r['wall_s']:.0f} s)"
        )
    body = [[*map(str, key), *(cells[key].get(c, "–") for c in columns)] for key in cells]
    return markdown([*rest, *map(str, columns)], body)


def known(summaries: list[Path], what: str) -> list[str]:
    """Metric names, or group fields (``kind.param`` and top-level keys), the runs have."""
    names: set[str] = set()
    for path in summaries:
        try:
            summary = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if what == "metrics":
            names |= set(summary.get("metrics", {}))
        else:
            names |= set(plugin_settings(summary)) | {
                k for k, v in summary.items() if not isinstance(v, dict)
            }
    return sorted(names)


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
    p.add_argument("--json", type=Path, help="also write the rows to this JSON file")
    return p


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    group = [k.strip() for k in args.group.split(",") if k.strip()]
    if args.pivot and args.pivot not in group:
        raise ConfigError(
            f"--pivot {args.pivot} is not one of the --group fields "
            f"({', '.join(group)}); add it to --group"
        )
    summaries = find_summaries(args.paths)
    if not summaries:
        raise ConfigError(
            f"no summary.json under {', '.join(map(str, args.paths))}; "
            "point at the directories runs wrote (outputs/ or multirun/)"
        )
    rows = aggregate(summaries, args.metric, group)
    if not rows:
        raise ConfigError(
            f"none of the {len(summaries)} summary.json files has "
            f"{args.metric!r}; {suggest(args.metric, known(summaries, 'metrics'))}"
        )
    for key in group:
        if all(r[key] is None for r in rows):
            raise ConfigError(
                f"no run has the --group field {key!r}; {suggest(key, known(summaries, 'fields'))}"
            )
    scale = 100.0 if args.percent else 1.0
    if args.pivot:
        print(pivot_table(rows, group, args.pivot, scale))
    else:
        print(long_table(rows, group, args.metric, scale))
    if args.json:
        clean = [
            {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()}
            for r in rows
        ]  # strict JSON: no NaN
        args.json.write_text(json.dumps(clean, indent=2, default=str) + "\n")
