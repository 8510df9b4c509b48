"""``attnbench plot``: learning curves (train/val loss and a metric against step or epoch)
of finished runs from their csv/metrics.csv; several runs are overlaid, one colour each, or,
with --group, the runs of a group (seeds) are drawn as their mean with a ± std band.

    attnbench plot multirun/2026-11-21 --metric val/acc --group attention.name

Also the figures ``attnbench report --plot/--html`` draws. Reads files only (never Lightning
or torch); matplotlib is imported when a figure is drawn, with no pyplot state (Agg through
``Figure.savefig``).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import re
import statistics
import sys
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from attnbench.registry import ConfigError, suggest

if TYPE_CHECKING:
    from matplotlib.figure import Figure

LOSSES = ("train/loss", "val/loss")
# Text stays text in SVGs (smaller and faster than glyph outlines); margins are fixed
# because tight_layout draws the figure twice.
STYLE = {"svg.fonttype": "none", "font.size": 9, "axes.grid": True, "grid.alpha": 0.3}


# --- run directories and their summaries (report reads them the same way) -------------------


def natural(text: str) -> list[Any]:
    """Sort key putting job 2 before job 10."""
    return [
        (0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"(\d+)", text)
    ]


def field(summary: dict[str, Any], key: str) -> Any:
    """A group field: ``model.name`` reads plugins.model.name; other keys (``seed``) are
    read from the top level."""
    plugins = summary.get("plugins") or {}
    node: Any = plugins if key.split(".")[0] in plugins else summary
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def known_fields(summaries: list[dict[str, Any]]) -> list[str]:
    """The group fields the summaries have: ``kind.param`` and top-level scalar keys."""
    names: set[str] = set()
    for summary in summaries:
        for kind, params in (summary.get("plugins") or {}).items():
            if isinstance(params, dict):
                names |= {f"{kind}.{p}" for p in params}
        names |= {k for k, v in summary.items() if not isinstance(v, dict)}
    return sorted(names)


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def group_order(key: tuple) -> tuple:
    """Groups sort by their fields, numbers by value (window 2 before 16, 0.25 before 0.5)."""
    return tuple((0, v, []) if is_number(v) else (1, 0, natural(str(v))) for v in key)


# --- CSV logs ---------------------------------------------------------------------------------


@dataclass
class Point:
    epoch: int
    step: int
    value: float


Log = dict[str, list[Point]]  # metric name -> the points logged for it, in file order


def csv_path(run_dir: Path) -> Path:
    return run_dir / "csv" / "metrics.csv"


def read_log(path: Path) -> Log:
    """Lightning's CSV log: rows are sparse (each holds the metrics logged at that step);
    empty and non-finite cells are skipped, so a diverged run's curve stops where it broke."""
    log: Log = defaultdict(list)
    with open(path, newline="") as file:
        for row in csv.DictReader(file):
            try:
                epoch, step = int(row.get("epoch") or 0), int(row.get("step") or 0)
            except ValueError:
                continue  # a half-written last line of a killed run
            for name, cell in row.items():
                if name in ("epoch", "step") or not cell:
                    continue
                try:
                    value = float(cell)
                except (TypeError, ValueError):
                    continue
                if math.isfinite(value):
                    log[name].append(Point(epoch, step, value))
    return dict(log)


def series(log: Log, name: str, x: str) -> tuple[list[float], list[float]]:
    """One metric against ``step`` (a repeated step keeps its last value, as after a resume)
    or ``epoch`` (the mean of what the epoch logged: train/loss is logged several times)."""
    by_x: dict[int, list[float]] = defaultdict(list)
    for point in log.get(name, []):
        if x == "step":
            by_x[point.step] = [point.value]
        else:
            by_x[point.epoch].append(point.value)
    xs = sorted(by_x)
    return [float(v) for v in xs], [statistics.fmean(by_x[v]) for v in xs]


def mean_band(
    logs: list[Log], name: str, x: str
) -> tuple[list[float], list[float], list[float], list[int]]:
    """Mean, sample std (NaN for one value) and count over the runs, at every x any run
    logged (a run that stopped early no longer counts after its end)."""
    pooled: dict[float, list[float]] = defaultdict(list)
    for log in logs:
        for xv, yv in zip(*series(log, name, x)):
            pooled[xv].append(yv)
    xs = sorted(pooled)
    means = [statistics.fmean(pooled[v]) for v in xs]
    stds = [statistics.stdev(pooled[v]) if len(pooled[v]) > 1 else math.nan for v in xs]
    return xs, means, stds, [len(pooled[v]) for v in xs]


def curve_metric(metric: str) -> str:
    """The metric a learning curve shows for a report's metric: test/acc is one number at
    the end, so its curve is val/acc."""
    return "val/" + metric.removeprefix("test/") if metric.startswith("test/") else metric


@dataclass
class Curves:
    """What one line (one run) or one band (a group of runs) of a learning-curve figure
    is drawn from."""

    label: str
    logs: list[Log]


# --- figures ----------------------------------------------------------------------------------


def new_figure(width: float, height: float, panels: int = 1) -> tuple[Figure, list[Any]]:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    axes = fig.subplots(1, panels, squeeze=False)[0]
    return fig, list(axes)


def draw(ax: Any, logs: list[Log], name: str, x: str, **style: Any) -> bool:
    """One run's line, or a group's mean line and ± std band; False when nothing was logged."""
    if len(logs) == 1:
        xs, ys = series(logs[0], name, x)
        if not xs:
            return False
        ax.plot(xs, ys, marker="." if len(xs) <= 30 else None, **style)
        return True
    xs, means, stds, _ = mean_band(logs, name, x)
    if not xs:
        return False
    ax.plot(xs, means, **style)
    banded = [(xv, m, s) for xv, m, s in zip(xs, means, stds) if not math.isnan(s)]
    if banded:
        ax.fill_between(
            [b[0] for b in banded],
            [b[1] - b[2] for b in banded],
            [b[1] + b[2] for b in banded],
            color=style.get("color"),
            alpha=0.2,
            linewidth=0,
        )
    return True


def curves_figure(
    entries: list[Curves], metric: str = "val/acc", x: str = "step", small: bool = False
) -> Figure:
    """Loss (train solid, val dashed) and ``metric`` against ``x``, one colour per entry
    (named in the legend); a single panel when the metric is itself a loss."""
    import matplotlib
    from matplotlib.ticker import MaxNLocator

    with matplotlib.rc_context(STYLE):
        panels = 1 if metric in LOSSES else 2
        fig, axes = new_figure((3.4 if small else 5.0) * panels, 2.4 if small else 3.6, panels)
        for i, entry in enumerate(entries):
            color = f"C{i % 10}"
            label = entry.label + (f" (n={len(entry.logs)})" if len(entry.logs) > 1 else "")
            for name, dash in zip(LOSSES, ("-", "--")):
                named = label if panels == 1 and name == "train/loss" else None
                draw(axes[0], entry.logs, name, x, color=color, linestyle=dash, label=named)
            if panels == 2:
                draw(axes[1], entry.logs, metric, x, color=color, label=label)
        axes[0].set_title("loss (train —, val --)")
        axes[-1].set_title(metric if panels == 2 else axes[0].get_title())
        for ax in axes:
            ax.set_xlabel(x)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # no epoch 0.25
        if len(entries) > 1 and axes[-1].get_lines():
            axes[-1].legend(fontsize=7, ncol=2 if len(entries) > 10 else 1)
        top = 0.89
        if len(entries) == 1 and not small:  # small: the page names the run beside it
            n = len(entries[0].logs)
            fig.suptitle(entries[0].label + (f" (n={n})" if n > 1 else ""))
            top = 0.84
        fig.subplots_adjust(left=0.08, right=0.98, bottom=0.17, top=top, wspace=0.22)
    return fig


def numeric_axis(rows: list[dict[str, Any]], group: list[str], pivot: str = "") -> str | None:
    """The group field to draw along x: the pivot, else the last field whose values are
    numbers (length, window, data fraction, d_model), with at least two of them."""
    candidates = [pivot] if pivot else []
    candidates += [k for k in reversed(group) if k != pivot]
    for key in candidates:
        values = [r.get(key) for r in rows]
        if all(is_number(v) for v in values) and len(set(values)) >= 2:
            return key
    return None


def varying(rows: list[dict[str, Any]], keys: list[str]) -> list[str]:
    """The keys whose value differs between rows (those worth a label)."""
    return [k for k in keys if len({str(r.get(k)) for r in rows}) > 1]


def report_figure(
    rows: list[dict[str, Any]], group: list[str], metric: str, scale: float = 1.0, pivot: str = ""
) -> Figure:
    """The groups of a report: bars with ± std error bars, or, along a numeric group field,
    one line per combination of the other fields with a ± std band (log x axis when the
    values span a decade or more)."""
    import matplotlib

    ylabel = f"{metric} (×100)" if scale == 100 else metric
    x_key = numeric_axis(rows, group, pivot)
    with matplotlib.rc_context(STYLE):
        if x_key is None:
            return bars(rows, group, ylabel, scale)
        fig, (ax,) = new_figure(6.0, 3.8)
        others = varying(rows, [k for k in group if k != x_key])
        series_rows: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
        for r in rows:
            series_rows[tuple(str(r.get(k)) for k in others)].append(r)
        for i, (key, members) in enumerate(sorted(series_rows.items())):
            members = sorted(members, key=lambda r: r[x_key])
            xs = [r[x_key] for r in members]
            means = [r["mean"] * scale for r in members]
            label = ", ".join(f"{k}={v}" for k, v in zip(others, key)) or metric
            ax.plot(xs, means, marker="o", color=f"C{i % 10}", label=label)
            band = [(r[x_key], r["mean"] * scale, r["std"] * scale) for r in members]
            band = [b for b in band if not math.isnan(b[2])]
            if band:
                ax.fill_between(
                    [b[0] for b in band],
                    [b[1] - b[2] for b in band],
                    [b[1] + b[2] for b in band],
                    color=f"C{i % 10}",
                    alpha=0.2,
                    linewidth=0,
                )
        values = [r[x_key] for r in rows]
        if min(values) > 0 and max(values) / min(values) >= 10:
            ax.set_xscale("log")
            ticks = sorted(set(values))
            if len(ticks) <= 12:  # the values swept, not powers of ten
                ax.set_xticks(ticks, [f"{v:g}" for v in ticks])
                ax.minorticks_off()
        ax.set_xlabel(x_key)
        ax.set_ylabel(ylabel)
        ax.set_title(f"{metric}: mean ± std over seeds")
        if others:
            ax.legend(fontsize=8)
        fig.subplots_adjust(left=0.12, right=0.97, bottom=0.14, top=0.91)
    return fig


def draw_bars(ax: Any, rows: list[dict[str, Any]], labels: list[str], scale: float, fontsize=7):
    """One bar per row: its mean with ± std error bars (none where a single seed gives no std)."""
    errors = [0.0 if r["std"] is None or math.isnan(r["std"]) else r["std"] * scale for r in rows]
    ax.bar(
        range(len(rows)),
        [r["mean"] * scale for r in rows],
        yerr=errors,
        capsize=4,
        color=[f"C{i % 10}" for i in range(len(rows))],
    )
    ax.set_xticks(range(len(rows)), labels, fontsize=fontsize)
    ax.grid(axis="x", visible=False)


def bars(rows: list[dict[str, Any]], group: list[str], ylabel: str, scale: float) -> Figure:
    labelled = varying(rows, group) or group
    labels = [
        "\n".join(str(r.get(k)) for k in labelled) + f"\n(n={r['n']})" for r in rows
    ]  # fields that are the same for every row would only repeat
    fig, (ax,) = new_figure(max(4.0, 0.9 * len(rows) + 1.5), 3.8)
    draw_bars(ax, rows, labels, scale, fontsize=7 if len(rows) > 8 else 8)
    ax.set_xlabel(" / ".join(labelled))
    ax.set_ylabel(ylabel)
    ax.set_title(f"{ylabel}: mean ± std over seeds")
    ax.grid(axis="x", visible=False)
    fig.subplots_adjust(left=0.12, right=0.97, bottom=0.14 + 0.05 * len(labelled), top=0.91)
    return fig


def svg_bytes(fig: Figure) -> bytes:
    import matplotlib

    buffer = io.BytesIO()
    with matplotlib.rc_context(STYLE):
        fig.savefig(buffer, format="svg")
    return buffer.getvalue()


def save(fig: Figure, out: Path) -> list[Path]:
    """``out`` as PNG and SVG side by side (out.png, out.svg), whatever suffix it had; a
    missing parent directory is created."""
    import matplotlib

    base = out.with_suffix("") if out.suffix.lower() in (".png", ".svg") else out
    paths = [base.with_name(base.name + ".png"), base.with_name(base.name + ".svg")]
    paths[0].parent.mkdir(parents=True, exist_ok=True)
    with matplotlib.rc_context(STYLE):
        for path in paths:
            fig.savefig(path, dpi=150)
    return paths


# --- attnbench plot ---------------------------------------------------------------------------


@dataclass
class RunLog:
    directory: str  # as the user will recognise it: relative to the directory given
    log: Log
    summary: dict[str, Any] | None


def read_summary(run_dir: Path) -> dict[str, Any] | None:
    try:
        summary = json.loads((run_dir / "summary.json").read_text())
    except (OSError, ValueError):
        return None
    return summary if isinstance(summary, dict) else None


def find_runs(paths: list[Path]) -> list[RunLog]:
    """Every run directory (one holding csv/metrics.csv) at or under ``paths``."""
    found: list[RunLog] = []
    for given in paths:
        if not given.is_dir():
            raise ConfigError(f"{given}: no such directory; give run or sweep directories")
        logs = sorted(given.rglob("csv/metrics.csv"), key=lambda p: natural(str(p)))
        if not logs:
            raise ConfigError(
                f"{given}: holds no csv/metrics.csv; learning curves come from runs "
                "logged with logger=csv (the default) or logger=many"
            )
        for path in logs:
            run_dir = path.parent.parent
            relative = run_dir.relative_to(given)
            if relative == Path("."):
                label = str(given)
            else:
                label = str(given / relative) if len(paths) > 1 else str(relative)
            found.append(RunLog(label, read_log(path), read_summary(run_dir)))
    return found


def overlay(runs: list[RunLog]) -> list[Curves]:
    """One entry per run, labelled by its directory and its status when not ok."""
    entries = []
    for run in runs:
        status = (run.summary or {}).get("status") or "ok"
        label = run.directory if status == "ok" else f"{run.directory} ({status})"
        entries.append(Curves(label, [run.log]))
    return entries


def grouped(runs: list[RunLog], group: list[str]) -> list[Curves]:
    """One entry per group of ok runs; runs without a summary or not ok are left out (as
    report leaves them out of its means), with a note."""
    pooled: dict[tuple, list[Log]] = defaultdict(list)
    for run in runs:
        status = (run.summary or {}).get("status") or "ok"
        if run.summary is None or status != "ok":
            why = "no readable summary.json" if run.summary is None else status
            print(f"attnbench plot: leaving out {run.directory}: {why}", file=sys.stderr)
            continue
        pooled[tuple(field(run.summary, k) for k in group)].append(run.log)
    for i, key in enumerate(group):
        if pooled and all(k[i] is None for k in pooled):
            fields = known_fields([r.summary for r in runs if r.summary])
            raise ConfigError(f"no run has the --group field {key!r}; {suggest(key, fields)}")
    return [
        Curves(", ".join(f"{k}={v}" for k, v in zip(group, key)), logs)
        for key, logs in sorted(pooled.items(), key=lambda kv: group_order(kv[0]))
    ]


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="attnbench plot", description=__doc__.split("\n\n")[0])
    p.add_argument("paths", nargs="+", type=Path, help="run or sweep directories")
    p.add_argument(
        "--metric", default="val/acc", help="metric drawn beside the losses (default val/acc)"
    )
    p.add_argument("--x", choices=("step", "epoch"), default="step", help="x axis (default step)")
    p.add_argument(
        "--group",
        default="",
        help="comma-separated fields (as report's --group, e.g. attention.name); the runs "
        "of a group are drawn as their mean ± std",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=Path("curves.png"),
        metavar="FILE",
        help="writes FILE.png and FILE.svg (default curves.png and curves.svg)",
    )
    return p


def plot_runs(
    paths: list[Path], metric: str = "val/acc", x: str = "step", group: Sequence[str] = ()
) -> Figure:
    """The learning-curve figure of the runs at or under ``paths``: overlaid, or one mean ±
    std band per group of ``group`` fields."""
    runs = find_runs(paths)
    logged = sorted({name for run in runs for name in run.log})
    if metric not in logged:
        raise ConfigError(f"no run logged {metric!r} in csv/metrics.csv; {suggest(metric, logged)}")
    entries = grouped(runs, list(group)) if group else overlay(runs)
    if not entries:
        raise ConfigError("no ok run to group; drop --group to see every run's curves")
    return curves_figure(entries, metric, x)


def main(argv: list[str] | None = None) -> int:
    """Writes the figure; 0 on success. Bad input (no such directory, no CSV log, a metric
    no run logged, an unknown group field) raises a one-line ConfigError (exit 2)."""
    args = parser().parse_args(argv)
    group = [k.strip() for k in args.group.split(",") if k.strip()]
    paths = save(plot_runs(args.paths, args.metric, args.x, group), args.out)
    print(f"wrote {' and '.join(map(str, paths))}")
    return 0
