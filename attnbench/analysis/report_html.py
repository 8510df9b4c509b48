"""``attnbench report DIR... --html FILE``: one self-contained page that works offline.

Everything is inline: the figures as data URIs, the attention weights as JSON in the page, a
few dozen lines of dependency-free JS. A Content-Security-Policy forbids every network load,
so the page shows the same on a laptop on a train as on the cluster that wrote it.

The attention view is bertviz's head view without a notebook: pick a layer and a head (or
their mean), hover a query token to see what it attends to (lines and shading whose opacity
is the weight), and the same matrix as a grid of cells.
"""

from __future__ import annotations

import base64
import html
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from attnbench.analysis.plot import Curves, csv_path, curves_figure, natural, read_log, svg_bytes

MAPS = Path("maps") / "maps.json"
KINDS = ("tokens", "alignment", "patches", "nodes")  # maps.json's kinds (analysis.examples)
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'"

STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 1.5em auto; max-width: 72em; color: #222; }
table { border-collapse: collapse; margin: .5em 0; }
th, td { border: 1px solid #ccc; padding: .2em .6em; text-align: left; }
th { background: #f3f3f3; }
.status { font-size: 80%; padding: 0 .4em; border-radius: .3em; background: #dfd; }
.status.failed, .status.diverged, .status.missing { background: #fdd; }
section.run { border-top: 1px solid #ddd; margin-top: 1.2em; }
.meta, .note { color: #555; }
img { max-width: 100%; }
.attn-view { display: inline-block; vertical-align: top; margin: .5em 1.5em .5em 0; }
.attn-view svg text { font: 12px monospace; cursor: default; }
.attn-view line.edge { stroke: #1f77b4; stroke-width: 2; }
.attn-view .off { display: none; }
.attn-view rect.shade { fill: #1f77b4; }
.attn-view rect.cell { fill: #1f77b4; }
.attn-view rect.row { fill: none; stroke: #d62728; stroke-width: 1.5; }
.readout { font: 12px monospace; min-height: 1.4em; }
.canvas svg { vertical-align: top; margin-right: 1em; }
ul.index { display: flex; flex-wrap: wrap; gap: .2em 1em; list-style: none; padding: 0; }
"""

# Builds each view from its JSON on load; marks it data-ready (what the browser test reads).
SCRIPT = r"""
(() => {
  "use strict";
  const esc = (s) => String(s).replace(/[&<>"]/g, (c) => `&#${c.charCodeAt(0)};`);
  const cut = (s) => (String(s).length > 14 ? String(s).slice(0, 13) + "…" : String(s));
  function matrix(d, layer, head) {  // Nq x Nk: one head's weights, or the heads' mean
    const heads = d.layers[layer];
    if (head !== "mean") return heads[+head];
    return heads[0].map((row, q) => row.map((_, k) =>
      heads.reduce((sum, h) => sum + h[q][k], 0) / heads.length));
  }
  function setup(view) {
    const d = JSON.parse(view.querySelector("script.weights").textContent);
    const nq = d.queries.length, nk = d.keys.length, step = 18;
    const lines = nq * nk <= 2500;  // beyond that the lines are a blur: shading only
    let s = `<svg class="tokens" width="330" height="${step * Math.max(nq, nk) + 8}">`;
    d.keys.forEach((t, k) => {
      s += `<rect class="shade" data-k="${k}" x="215" y="${step * k + 2}" width="112" ` +
        `height="${step - 2}" fill-opacity="0"></rect>` +
        `<text class="key" data-k="${k}" x="220" y="${step * k + 15}">${esc(cut(t))}</text>`;
    });
    d.queries.forEach((t, q) => {
      s += `<text class="query" data-q="${q}" x="110" y="${step * q + 15}" ` +
        `text-anchor="end">${esc(cut(t))}</text>`;
    });
    if (lines) for (let q = 0; q < nq; q++) for (let k = 0; k < nk; k++) {
      s += `<line class="edge" data-q="${q}" data-k="${k}" x1="115" y1="${step * q + 11}" ` +
        `x2="212" y2="${step * k + 11}"></line>`;
    }
    const c = Math.max(4, Math.min(14, Math.floor(420 / nk))), pad = 80;
    s += `</svg><svg class="grid" width="${pad + c * nk + 40}" height="${pad + c * nq + 4}">`;
    d.keys.forEach((t, k) => {
      const x = pad + c * k + c / 2 + 4;
      s += `<text x="${x}" y="${pad - 4}" transform="rotate(-60 ${x} ${pad - 4})">` +
        `${esc(cut(t))}</text>`;
    });
    d.queries.forEach((t, q) => {
      s += `<text x="${pad - 4}" y="${pad + c * q + c - 2}" text-anchor="end">` +
        `${esc(cut(t))}</text>`;
      for (let k = 0; k < nk; k++) {
        s += `<rect class="cell" data-q="${q}" data-k="${k}" x="${pad + c * k}" ` +
          `y="${pad + c * q}" width="${c - 1}" height="${c - 1}"></rect>`;
      }
    });
    s += `<rect class="row off" x="${pad - 1}" width="${c * nk + 1}" height="${c + 1}"></rect>`;
    view.querySelector(".canvas").innerHTML = s + "</svg>";
    const pick = { layer: view.querySelector("select.layer"),
      head: view.querySelector("select.head") };
    const readout = view.querySelector(".readout"), row = view.querySelector("rect.row");
    const edges = [...view.querySelectorAll("line.edge")];
    const cells = [...view.querySelectorAll("rect.cell")];
    const shades = [...view.querySelectorAll("rect.shade")];
    let m = null, focus = null;
    function paint() {
      for (const e of edges) {
        const q = +e.dataset.q;
        e.setAttribute("stroke-opacity", m[q][+e.dataset.k].toFixed(3));
        e.classList.toggle("off", focus !== null && q !== focus);
      }
      for (const r of shades) {
        const w = focus === null ? 0 : m[focus][+r.dataset.k];
        r.setAttribute("fill-opacity", w.toFixed(3));
      }
      row.classList.toggle("off", focus === null);
      if (focus !== null) row.setAttribute("y", pad + c * focus - 1);
      view.dataset.focus = focus === null ? "" : String(focus);
    }
    function show() {
      m = matrix(d, +pick.layer.value, pick.head.value);
      for (const r of cells) {
        r.setAttribute("fill-opacity", m[+r.dataset.q][+r.dataset.k].toFixed(3));
      }
      paint();
    }
    function hover(event) {  // a query token, or a cell of its row
      const q = event.target.dataset.q;
      if (q === undefined) return;
      focus = +q;
      paint();
      const k = event.target.dataset.k;
      readout.textContent = k === undefined ? `${d.queries[focus]} attends to …` :
        `${d.queries[focus]} → ${d.keys[+k]}: ${m[focus][+k].toFixed(3)}`;
    }
    function leave() { focus = null; readout.textContent = ""; paint(); }
    pick.layer.addEventListener("change", show);
    pick.head.addEventListener("change", show);
    for (const svg of view.querySelectorAll(".canvas svg")) {
      svg.addEventListener("mouseover", hover);
      svg.addEventListener("mouseleave", leave);
    }
    show();
    view.dataset.ready = "1";
  }
  const views = document.querySelectorAll(".attn-view");
  views.forEach(setup);
  document.body.dataset.views = String(views.length);
})();
"""


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def data_uri(svg: bytes) -> str:
    return "data:image/svg+xml;base64," + base64.b64encode(svg).decode("ascii")


def table_html(header: list[str], body: list[list[str]]) -> str:
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    rows = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in body)
    return f'<table class="results"><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>'


def run_meta(summary: dict[str, Any], metric: str) -> str:
    """One line: the plugins by name, the seed, the metric at the end, the wall time."""
    plugins = summary.get("plugins") or {}
    parts = [
        f"{kind}={params.get('name')}"
        for kind, params in plugins.items()
        if isinstance(params, dict) and params.get("name") is not None
    ]
    if summary.get("seed") is not None:
        parts.append(f"seed {summary['seed']}")
    for name in sorted(summary.get("metrics") or {}):
        value = summary["metrics"][name]
        if name.split("/")[-1] == metric.split("/")[-1] and isinstance(value, (int, float)):
            parts.append(f"{name} {value:.4g}")
    if isinstance(summary.get("wall_seconds"), (int, float)):
        parts.append(f"{summary['wall_seconds']:.0f} s")
    return " · ".join(parts)


class MapsError(ValueError):
    """maps.json is not what ``attnbench maps`` writes; said in the page, never fatal."""


def labels(tokens: Any, n: int) -> list[str]:
    """``n`` axis labels: the tokens where there are enough of them, else positions."""
    tokens = tokens if isinstance(tokens, list) and len(tokens) == n else None
    return [str(t) for t in tokens] if tokens else [str(i) for i in range(n)]


def example_view(kind: str, example: dict[str, Any], number: int) -> str:
    """The controls, the place the JS draws in, and the weights (rounded to 3 digits)."""
    layers = example.get("layers")
    if (
        not isinstance(layers, list)
        or not layers
        or not all(isinstance(heads, list) and heads for heads in layers)
    ):
        raise MapsError(f"example {number}: 'layers' is not a list of layers of heads")
    first = layers[0][0]
    if not isinstance(first, list) or not first or not isinstance(first[0], list):
        raise MapsError(f"example {number}: a head is not an Nq × Nk list of lists")
    nq, nk = len(first), len(first[0])
    rounded = []
    for li, heads in enumerate(layers):
        rounded.append([])
        for hi, weights in enumerate(heads):
            if len(weights) != nq or any(len(row) != nk for row in weights):
                raise MapsError(f"example {number}: layer {li} head {hi} is not {nq} × {nk}")
            try:
                rounded[-1].append([[round(float(w), 3) for w in row] for row in weights])
            except (TypeError, ValueError) as e:
                raise MapsError(f"example {number}: layer {li} head {hi}: {e}") from None
    if kind == "alignment":
        queries = labels(example.get("target"), nq)
        keys = labels(example.get("source"), nk)
        caption = "cross-attention: target (left) → source (right)"
    else:
        queries = labels(example.get("tokens"), nq)
        keys = labels(example.get("tokens"), nk)
        caption = "query (left) → key (right)"
    data = {"queries": queries, "keys": keys, "layers": rounded}
    payload = json.dumps(data, separators=(",", ":")).replace("<", "\\u003c")
    heads = len(layers[0])
    layer_options = "".join(f'<option value="{i}">{i}</option>' for i in range(len(layers)))
    head_options = '<option value="mean">mean</option>' + "".join(
        f'<option value="{i}"{" selected" if i == 0 else ""}>{i}</option>' for i in range(heads)
    )
    index = example.get("index")
    name = f"example {index}" if index is not None else "your text"  # maps --text
    position = "" if index is None else index
    if example.get("text"):
        name += f": {example['text']}"
    return (
        f'<div class="attn-view" data-kind="{esc(kind)}" data-index="{esc(position)}">'
        f"<p><b>{esc(name)}</b> <span class='note'>{esc(caption)}</span><br>"
        f'layer <select class="layer">{layer_options}</select> '
        f'head <select class="head">{head_options}</select></p>'
        f'<div class="canvas"></div><div class="readout"></div>'
        f'<script type="application/json" class="weights">{payload}</script></div>'
    )


def maps_html(run_dir: Path) -> str:
    """Every example of ``maps/maps.json`` as an attention view; "" when there is none."""
    path = run_dir / MAPS
    if not path.is_file():
        return ""
    try:
        maps = json.loads(path.read_text())
        if not isinstance(maps, dict) or maps.get("kind") not in KINDS:
            raise MapsError(f"'kind' is not one of {', '.join(KINDS)}")
        examples = maps.get("examples")
        if not isinstance(examples, list):
            raise MapsError("'examples' is not a list")
        views = [example_view(maps["kind"], e, i) for i, e in enumerate(examples)]
    except (OSError, ValueError) as e:  # MapsError and bad JSON alike
        print(f"attnbench report: skipping {path}: {e}", file=sys.stderr)
        return f'<p class="note">attention maps: {esc(path)} unreadable: {esc(e)}</p>'
    return f"<h4>attention ({esc(maps['kind'])})</h4>" + "".join(views)


def curves_html(label: str, run_dir: Path, metric: str, x: str) -> str:
    path = csv_path(run_dir)
    if not path.is_file():
        return '<p class="note">no learning curves: no csv/metrics.csv (logger=none?)</p>'
    fig = curves_figure([Curves(label, [read_log(path)])], metric, x, small=True)
    uri = data_uri(svg_bytes(fig))
    return f'<img class="curves" alt="learning curves of {esc(label)}" src="{uri}">'


def run_section(number: int, label: str, run_dir: Path, summary: dict, metric: str, x: str) -> str:
    status = str(summary.get("status") or "ok")
    reason = summary.get("reason")
    why = f'<p class="note">{esc(reason)}</p>' if reason and status != "ok" else ""
    return (
        f'<section class="run" id="run-{number}" data-status="{esc(status)}">'
        f'<h3>{esc(label)} <span class="status {esc(status)}">{esc(status)}</span></h3>'
        f'<p class="meta">{esc(run_meta(summary, metric))}</p>{why}'
        f"{curves_html(label, run_dir, metric, x)}{maps_html(run_dir)}</section>"
    )


def render(
    *,
    title: str,
    sources: Sequence[str],
    table: tuple[list[str], list[list[str]]],
    notes: Sequence[str],
    plot_svg: bytes | None,
    runs: Sequence[tuple[str, Path, dict[str, Any]]],
    metric: str,
    x: str = "step",
) -> str:
    """The page. ``runs`` are (label, run directory, summary); ``notes`` the runs left out of
    the table and why; ``metric`` the one each run's learning curves show beside the loss."""
    runs = sorted(runs, key=lambda run: natural(run[0]))
    left_out = (
        '<ul class="left-out">' + "".join(f"<li>{esc(n)}</li>" for n in notes) + "</ul>"
        if notes
        else ""
    )
    plot = (
        f'<img class="report-plot" alt="the groups" src="{data_uri(plot_svg)}">'
        if plot_svg
        else '<p class="note">no group has a value to plot</p>'
    )
    index = "".join(
        f'<li><a href="#run-{i}">{esc(label)}</a> '
        f'<span class="status {esc(s.get("status") or "ok")}">{esc(s.get("status") or "ok")}'
        "</span></li>"
        for i, (label, _, s) in enumerate(runs)
    )
    sections = "".join(
        run_section(i, label, run_dir, summary, metric, x)
        for i, (label, run_dir, summary) in enumerate(runs)
    )
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
        f"<title>{esc(title)}</title><style>{STYLE}</style></head><body>"
        f"<h1>{esc(title)}</h1>"
        f'<p class="meta">runs under {esc(", ".join(sources))}</p>'
        f"<h2>Results</h2>{table_html(*table)}{left_out}{plot}"
        f"<h2>Runs ({len(runs)})</h2><ul class='index'>{index}</ul>{sections}"
        f"<script>{SCRIPT}</script></body></html>\n"
    )


def write_html(path: Path, **page: Any) -> None:
    """:func:`render` to ``path`` (its directory is created)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render(**page), encoding="utf-8")
