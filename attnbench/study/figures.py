"""Figures shared by studies, drawn with report's helpers (attnbench.analysis.plot): matplotlib
Figure objects without pyplot state, saved as PNG + SVG by ``plot.save``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from attnbench.analysis.plot import STYLE, draw_bars, report_figure, varying
from attnbench.study.base import Results, is_rate

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def fields_of(row: dict[str, Any]) -> list[str]:
    """A row's group fields (everything but the sweep, metric and the numbers)."""
    numbers = {"sweep", "metric", "n", "mean", "std", "seeds", "values", "params", "wall_s"}
    return [k for k in row if k not in numbers]


def default_figure(results: Results, metric: str, percent: bool) -> Figure | None:
    """One sweep: report's own figure of its groups. Several: one panel of bars per sweep."""
    rows = [r for r in results.rows if r["metric"] == metric]
    if not rows:
        return None
    scale = 100.0 if percent else 1.0
    sweeps = list(dict.fromkeys(r["sweep"] for r in rows))
    if len(sweeps) == 1:
        return report_figure(rows, fields_of(rows[0]), metric, scale)
    return bar_grid(results, [metric], percent)


def bar_grid(results: Results, metrics: Sequence[str], percent: bool) -> Figure | None:
    """Bars with ± std error bars: one row of panels per metric, one column per sweep (the
    tasks of a study side by side)."""
    import matplotlib

    sweeps = list(dict.fromkeys(r["sweep"] for r in results.rows if r["metric"] in metrics))
    if not sweeps:
        return None
    with matplotlib.rc_context(STYLE):
        from matplotlib.figure import Figure

        fig = Figure(figsize=(4.2 * len(sweeps), 3.2 * len(metrics)))
        grid = fig.subplots(len(metrics), len(sweeps), squeeze=False)
        for i, metric in enumerate(metrics):
            scale = 100.0 if percent and is_rate(metric) else 1.0  # times stay in seconds
            for ax, sweep in zip(grid[i], sweeps):
                mine = [r for r in results.rows if r["sweep"] == sweep and r["metric"] == metric]
                if mine:
                    _bars(ax, mine, scale)
                ax.set_title(f"{sweep}: {metric}", fontsize=9)
                ax.set_ylabel(f"{metric} (×100)" if scale == 100 else metric, fontsize=8)
        fig.suptitle("mean ± std over seeds")
        fig.subplots_adjust(left=0.08, right=0.98, bottom=0.1, top=0.9, wspace=0.3, hspace=0.6)
    return fig


def _bars(ax: Any, rows: list[dict[str, Any]], scale: float) -> None:
    labelled = varying(rows, fields_of(rows[0])) or fields_of(rows[0])
    labels = ["\n".join(str(r.get(k)) for k in labelled) for r in rows]
    draw_bars(ax, rows, labels, scale)


def stat_line(ax: Any, points: dict[float, Any], scale: float, x_scale: float = 1.0, **style):
    """One line of ``Stat`` means with ± std error bars along x (a study's curve against a
    length or a data fraction); ``style`` goes to matplotlib (color, label)."""
    xs = sorted(points)
    ax.errorbar(
        [x * x_scale for x in xs],
        [points[x].mean * scale for x in xs],
        yerr=[points[x].spread() * scale for x in xs],
        marker="o",
        capsize=3,
        **style,
    )
