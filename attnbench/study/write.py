"""A study's outputs: report.md (claim, setup, table, figure, verdict with its numbers,
wall time), results.json, the figure as PNG + SVG, and report.html (report's offline page
with the verdict above the table and every run's learning curves)."""

from __future__ import annotations

import json
import math
import platform
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from attnbench.analysis.plot import save, svg_bytes
from attnbench.report import collect, fmt, markdown
from attnbench.study.base import Results, Verdict, is_rate
from attnbench.study.figures import fields_of
from attnbench.study.plugin import Study

FIGURE = "figure"  # figure.png and figure.svg


@dataclass
class Written:
    name: str
    study: Study
    results: Results
    verdict: Verdict
    commands: list[list[str]]
    command: str  # the study command as typed
    quick: bool
    seeds: int  # 0 for a study that measures instead of training
    wall_seconds: float  # this call
    run_seconds: float  # the runs' own time, summed (earlier calls' included)


def table(results: Results, study: Study) -> tuple[list[str], list[list[str]]]:
    """One row per sweep and group, one column per metric: mean ± std (n)."""
    scale = 100.0 if study.percent else 1.0
    cells: dict[tuple, dict[str, str]] = defaultdict(dict)
    fields: list[str] = []
    for row in results.rows:
        own = fields_of(row)
        fields += [f for f in own if f not in fields]
        key = (row["sweep"], *((f, row.get(f)) for f in own))
        std = math.nan if row.get("std") is None else row["std"]
        rate = study.percent and is_rate(row["metric"])
        value = fmt(row["mean"], std, scale if rate else 1.0)
        cells[key][row["metric"]] = f"{value} (n={row['n']})"
    metrics = list(dict.fromkeys(r["metric"] for r in results.rows))
    header = ["sweep", *fields, *(f"{m}{' ×100' if study.percent and is_rate(m) else ''}"
                                  for m in metrics)]  # fmt: skip
    body = []
    for key, by_metric in cells.items():
        known = dict(key[1:])
        body.append(
            [key[0], *(str(known.get(f, "")) for f in fields)]
            + [by_metric.get(m, "–") for m in metrics]
        )
    return header, body


_is_rate = is_rate  # the name studies first imported from here


def number_text(value: Any) -> str:
    if isinstance(value, float):
        return "–" if math.isnan(value) else f"{value:.4g}"
    return str(value)


def markdown_report(w: Written, figure: bool) -> str:
    header, body = table(w.results, w.study)
    numbers = [[k, number_text(v)] for k, v in w.verdict.numbers.items()]
    lines = [
        f"# Study `{w.name}`{' (quick)' if w.quick else ''}",
        "",
        f"> {w.study.claim}",
        "",
        f"**Verdict: {w.verdict.verdict}.** {w.verdict.summary}",
        "",
        "## Setup",
        "",
        f"Command: `{w.command}` ({f'{w.seeds} seed(s)' if w.seeds else 'a measurement'}"
        f"{', --quick' if w.quick else ''}; "
        f"Python {platform.python_version()}, {platform.machine()}).",
        "",
    ]
    described = w.study.setup(w.quick)
    if described:
        lines += [described, ""]
    if w.commands:
        lines += ["The sweeps it ran (Hydra multirun):", ""]
        lines += [f"    {' '.join(c)}" for c in w.commands]
        lines.append("")
    lines += ["## Results", "", markdown(header, body) if body else "(no run gave a number)", ""]
    if figure:
        lines += [f"![{w.name}]({FIGURE}.png)", ""]
    lines += [
        "## Verdict",
        "",
        f"Rule (fixed in code before running): {w.study.rule}",
        "",
        markdown(["number", "value"], numbers) if numbers else "(no numbers)",
        "",
        f"Verdict: **{w.verdict.verdict}**. {w.verdict.summary}",
        "",
    ]
    if w.results.failed:
        lines += ["## Jobs that did not finish ok", ""]
        lines += [f"- {f['status']}: {f['run']}: {f['reason']}" for f in w.results.failed]
        lines.append("")
    lines += [
        "## Wall time",
        "",
        f"This call: {w.wall_seconds:.0f} s; the runs' (or the benchmark's) own wall time, "
        f"summed over every call that ran them (a resumed run's earlier calls counted to "
        f"their last checkpoint): {w.run_seconds:.0f} s.",
        "",
    ]
    return "\n".join(lines)


def clean(value: Any) -> Any:
    """Strict JSON: NaN and infinities become null, recursively."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean(v) for v in value]
    return value


def write_outputs(w: Written, out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    fig = w.study.figure(w.results)
    written = save(fig, out / FIGURE) if fig is not None else []
    (out / "report.md").write_text(markdown_report(w, fig is not None))
    data = {
        "study": w.name,
        "claim": w.study.claim,
        "rule": w.study.rule,
        "verdict": w.verdict.verdict,
        "summary": w.verdict.summary,
        "numbers": w.verdict.numbers,
        "rows": w.results.rows,
        "failed": w.results.failed,
        "quick": w.quick,
        "seeds": w.seeds,
        "percent": w.study.percent,
        "command": w.command,
        "sweeps": [" ".join(c) for c in w.commands],
        "wall_seconds": w.wall_seconds,
        "run_seconds": w.run_seconds,
    }
    (out / "results.json").write_text(json.dumps(clean(data), indent=2, default=str) + "\n")
    html = out / "report.html"
    write_html_page(w, out, html, None if fig is None else svg_bytes(fig))
    return [out / "report.md", out / "results.json", *written, html]


def write_html_page(w: Written, out: Path, path: Path, plot_svg: bytes | None) -> None:
    """report's offline page, with the verdict and its rule as the first notes."""
    from attnbench.analysis.report_html import write_html

    runs_dir = out / "runs"
    runs = collect([runs_dir]).runs if any(runs_dir.rglob("summary.json")) else []
    notes = [
        f"Claim: {w.study.claim}",
        f"Verdict: {w.verdict.verdict}. {w.verdict.summary}",
        f"Rule: {w.study.rule}",
        *(f"{k} = {number_text(v)}" for k, v in w.verdict.numbers.items()),
        *(f"{f['status']}: {f['run']}: {f['reason']}" for f in w.results.failed),
    ]
    write_html(
        path,
        title=f"attnbench study {w.name}: {w.verdict.verdict}",
        sources=[str(runs_dir)],
        table=table(w.results, w.study),
        notes=notes,
        plot_svg=plot_svg,
        runs=[(run.directory, run.path.parent, run.summary) for run in runs],
        metric="val/acc",
    )
