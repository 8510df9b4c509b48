"""Figures of attention maps and head statistics, PNG + SVG, sized to stay readable when a
paper page shrinks them. matplotlib through ``Figure`` objects (Agg; no pyplot state), and
imported only when a figure is drawn.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import Tensor

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from attnbench.analysis.examples import Example

# Text stays text in SVGs (small, searchable); heatmaps go in as one raster each.
STYLE = {"svg.fonttype": "none", "font.size": 8, "axes.titlesize": 8, "image.cmap": "Blues"}
CMAP = "Blues"
LABELLED_TOKENS = 48  # beyond this, a heatmap's axes show positions, not every token


def _figure(width: float, height: float) -> Figure:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height))


def save(fig: Figure, stem: Path, suffixes: tuple[str, ...] = (".png", ".svg")) -> list[Path]:
    """stem.png (150 dpi) and stem.svg (or only the formats in ``suffixes``)."""
    import matplotlib

    paths = [stem.with_suffix(suffix) for suffix in suffixes]
    with matplotlib.rc_context(STYLE):
        for path in paths:
            fig.savefig(path, dpi=150 if path.suffix == ".png" else "figure")
    return paths


def _label_size(labels: list[str]) -> float:
    return 7.0 if len(labels) <= 20 else 5.0


def _label_inches(labels: list[str]) -> float:
    """About how far a column of tick labels reaches (0.6 em a character)."""
    if len(labels) > LABELLED_TOKENS:
        return 0.25
    return max((len(t) for t in labels), default=1) * _label_size(labels) * 0.6 / 72 + 0.08


def _label_axes(ax: Any, rows: list[str], cols: list[str]) -> None:
    """Tokens on both axes when there are few enough to read; positions otherwise."""
    for labels, set_ticks, set_labels, rotate in (
        (cols, ax.set_xticks, ax.set_xticklabels, 90),
        (rows, ax.set_yticks, ax.set_yticklabels, 0),
    ):
        if len(labels) <= LABELLED_TOKENS:
            set_ticks(range(len(labels)))
            set_labels(labels, fontsize=_label_size(labels), rotation=rotate)
        else:
            step = max(1, len(labels) // 8)
            set_ticks(range(0, len(labels), step))
            set_labels([str(i) for i in range(0, len(labels), step)], fontsize=6)
    ax.tick_params(length=0)


def _heatmaps(
    panels: list[tuple[str, Tensor]],
    rows: list[str],
    cols: list[str],
    ncols: int,
    title: str,
    axis_names: tuple[str, str] = ("query", "key"),
) -> Figure:
    """A grid of (title, (Nq, Nk)) heatmaps sharing one 0..max colour scale, every panel
    with its tokens. Margins are measured from the labels, not found by a layout engine
    (which costs a whole draw per figure)."""
    import matplotlib

    nrows = -(-len(panels) // ncols)
    cell = min(0.16, 5.5 / max(len(rows), len(cols)))  # inches: 7 pt labels fit
    pw, ph = max(1.2, cell * len(cols)), max(1.2, cell * len(rows))
    left, below = _label_inches(rows) + 0.2, _label_inches(cols) + 0.2  # + axis names
    head, top, right = 0.25, 0.4, 1.0  # panel titles, suptitle, colour bar
    width = ncols * (left + pw) + right
    height = top + nrows * (head + ph + below)
    with matplotlib.rc_context(STYLE):
        fig = _figure(width, height)
        scale = max(float(w.max()) for _, w in panels) or 1.0
        image = None
        for i, (name, w) in enumerate(panels):
            r, c = divmod(i, ncols)
            x0 = c * (left + pw) + left
            y0 = height - top - r * (head + ph + below) - head - ph
            ax = fig.add_axes((x0 / width, y0 / height, pw / width, ph / height))
            image = ax.imshow(w.numpy(), cmap=CMAP, vmin=0.0, vmax=scale, aspect="auto")
            ax.set_title(name)
            _label_axes(ax, rows, cols)
            if c == 0:
                ax.set_ylabel(axis_names[0])
            if r == nrows - 1:
                ax.set_xlabel(axis_names[1])
        bar_h = min(2.5, 0.6 * (height - top))
        bar = fig.add_axes(
            (
                (width - right + 0.2) / width,
                (height - top - bar_h) / 2 / height,
                0.12 / width,
                bar_h / height,
            )
        )
        fig.colorbar(image, cax=bar, label="attention weight")
        fig.suptitle(title, y=1 - 0.12 / height, va="top")
    return fig


def token_grid(example: Example, layers: list[int], heads: list[int], title: str) -> Figure:
    """Layers x heads heatmaps, queries down, keys across, the tokens on both axes."""
    panels = [(f"layer {lay} head {h}", example.layers[lay][h]) for lay in layers for h in heads]
    return _heatmaps(panels, example.tokens, example.tokens, len(heads), title)


def alignment(example: Example, heads: list[int], title: str) -> Figure:
    """The last decoder layer's cross-attention (generated target down, source across):
    the mean over heads, then each head (Bahdanau et al. 2015, Fig. 3)."""
    last = example.layers[-1]  # (h, T, S)
    panels = [("mean over heads", last.mean(0))]
    if len(heads) > 1 or last.size(0) > 1:
        panels += [(f"head {h}", last[h]) for h in heads]
    layer = len(example.layers) - 1
    return _heatmaps(
        panels,
        example.target,
        example.source,
        min(len(panels), 3),
        f"{title} (decoder layer {layer})",
        ("generated target", "source"),
    )


def _pixels(image: Tensor, floor: float = 0.0) -> tuple[Any, str | None]:
    """(C, H, W) -> an array imshow draws (gray for one channel), scaled to [floor, 1]."""
    x = image.float()
    x = (x - x.min()) / (x.max() - x.min()).clamp(min=1e-12)
    x = floor + (1 - floor) * x
    if x.size(0) == 1:
        return x[0].numpy(), "gray"
    return x.permute(1, 2, 0).numpy(), None


def image_overlay(example: Example, layers: list[int], heads: list[int], title: str) -> Figure:
    """The pooled query's attention over the patches, per layer (mean over the chosen
    heads), overlaid on the image; then attention rollout across all layers."""
    import matplotlib
    from matplotlib.colors import LinearSegmentedColormap

    pooled = example.extra["pooled"]  # per layer (h, rows, cols)
    grids = [(f"layer {lay}", pooled[lay][heads].mean(0)) for lay in layers]
    grids.append(("rollout", example.extra["rollout"]))
    image = example.extra.get("pixels")
    # transparent (no attention) to opaque red: the image shows through where none goes
    overlay = LinearSegmentedColormap.from_list("overlay", [(1, 0, 0, 0), (0.9, 0, 0, 0.85)])
    with matplotlib.rc_context(STYLE):
        panels = len(grids) + (image is not None)
        width, height = 2.1 * panels + 0.3, 2.4
        fig = _figure(width, height)
        axes = list(
            fig.subplots(
                1,
                panels,
                squeeze=False,
                gridspec_kw=dict(
                    left=0.15 / width,
                    right=1 - 0.5 / width,
                    bottom=0.1 / height,
                    top=1 - 0.55 / height,
                    wspace=0.45,
                ),
            )[0]
        )
        if image is not None:
            pixels, cmap = _pixels(image)
            axes[0].imshow(pixels, cmap=cmap, interpolation="nearest")
            axes[0].set_title("input")
            axes[0].set_xticks([])
            axes[0].set_yticks([])
            axes = axes[1:]
        for ax, (name, grid) in zip(axes, grids):
            rows, cols = grid.shape
            extent = (0, cols, rows, 0)
            if image is not None:  # lifted off black, so the red shows on dark pixels too
                pixels, cmap = _pixels(image, floor=0.35)
                ax.imshow(pixels, cmap=cmap, extent=extent, interpolation="nearest", vmin=0)
            # its own min..max: an untrained or diffuse head still shows where it looks most
            shown = ax.imshow(grid.numpy(), cmap=overlay, extent=extent, interpolation="nearest")
            fig.colorbar(shown, ax=ax, shrink=0.7)
            ax.set_title(name)
            ax.set_xticks([])
            ax.set_yticks([])
        fig.suptitle(f"{title}: {example.extra['query']} query over patches")
    return fig


def graph_neighbourhood(
    example: Example, layers: list[int], heads: list[int], title: str
) -> Figure:
    """The chosen node (centre) and the neighbours it attends, per layer and head: each
    spoke's width and colour is the node's attention weight on that neighbour."""
    import math

    import matplotlib
    from matplotlib import colormaps

    cmap = colormaps[CMAP]
    names = example.tokens
    k = len(names) - 1
    angles = [2 * math.pi * i / max(k, 1) for i in range(k)]
    spots = [(math.cos(a), math.sin(a)) for a in angles]
    label_weights = k <= 12
    with matplotlib.rc_context(STYLE):
        width, height = 2.4 * len(heads) + 0.2, 2.5 * len(layers) + 0.4
        fig = _figure(width, height)
        axes = fig.subplots(
            len(layers),
            len(heads),
            squeeze=False,
            gridspec_kw=dict(
                left=0.1 / width,
                right=1 - 0.1 / width,
                bottom=0.3 / height,
                top=1 - 0.6 / height,
                hspace=0.35,
                wspace=0.1,
            ),
        )
        for r, lay in enumerate(layers):
            for c, h in enumerate(heads):
                ax = axes[r][c]
                row = example.layers[lay][h][0]  # the centre's weights over [itself, nbrs]
                top = float(row.max()) or 1.0
                for (x, y), w, name in zip(spots, row[1:].tolist(), names[1:]):
                    ax.plot([0, x], [0, y], color=cmap(0.2 + 0.8 * w / top), lw=0.5 + 4 * w)
                    ax.annotate(name, (x, y), ha="center", va="center", fontsize=6)
                    if label_weights:
                        ax.annotate(f"{w:.2f}", (0.55 * x, 0.55 * y), fontsize=5, ha="center")
                ax.scatter([0], [0], s=120, color=cmap(0.2 + 0.8 * float(row[0]) / top))
                ax.set_xlabel(f"node {names[0]}: self {float(row[0]):.2f}", fontsize=6)
                ax.set_title(f"layer {lay} head {h}")
                ax.set_xlim(-1.3, 1.3)
                ax.set_ylim(-1.3, 1.3)
                ax.set_aspect("equal")
                ax.set_xticks([])
                ax.set_yticks([])
                for spine in ax.spines.values():
                    spine.set_visible(False)
        shown = example.extra.get("shown", k)
        degree = example.extra.get("degree", k)
        fig.suptitle(f"{title}: node {names[0]}, {shown} of its {degree} edges shown")
    return fig


def head_distance(rows: list[dict]) -> Figure:
    """Mean attention distance (left) and entropy (right) against depth, one dot per head
    (ViT's Fig. 7); modules without a distance (cross-attention, graphs) only on the right."""
    import matplotlib
    from matplotlib import colormaps

    heads = max(r["head"] for r in rows) + 1
    colours = colormaps["viridis"]
    with matplotlib.rc_context(STYLE):
        modules = list(dict.fromkeys(r["module"] for r in rows))
        below = max(len(_short(m)) for m in modules) * 6 * 0.6 / 72 * 0.75 + 0.45  # 45° labels
        width, height = max(6.0, 0.8 * len(modules) + 3.0), 2.6 + below
        fig = _figure(width, height)
        axes = fig.subplots(
            1,
            2,
            gridspec_kw=dict(
                left=0.6 / width,
                right=1 - 0.15 / width,
                bottom=below / height,
                top=1 - 0.15 / height,
                wspace=0.35,
            ),
        )
        for ax, key, label in (
            (axes[0], "mean_distance", "mean attention distance"),
            (axes[1], "entropy", "attention entropy (nats)"),
        ):
            points = [r for r in rows if r[key] is not None]
            shown = list(dict.fromkeys(r["module"] for r in points))
            depth = {m: i for i, m in enumerate(shown)}
            if not points:
                ax.text(0.5, 0.5, "not measured", ha="center", transform=ax.transAxes)
            for h in range(heads):
                mine = [r for r in points if r["head"] == h]
                # spread a layer's heads a little so equal values stay visible
                offset = 0.3 * (h / max(heads - 1, 1) - 0.5) if heads > 1 else 0.0
                ax.scatter(
                    [depth[r["module"]] + offset for r in mine],
                    [r[key] for r in mine],
                    s=14,
                    color=colours(h / max(heads - 1, 1)),
                    label=f"head {h}",
                )
            ax.set_xticks(range(len(shown)))
            ax.set_xlim(-0.5, max(len(shown), 1) - 0.5)
            ax.set_xticklabels([_short(m) for m in shown], rotation=45, ha="right", fontsize=6)
            ax.set_xlabel("depth (attention module)")
            ax.set_ylabel(label)
            ax.grid(alpha=0.3)
        if heads <= 8:
            axes[1].legend(fontsize=6, frameon=False)
    return fig


def _short(path: str) -> str:
    """'backbone.decoder_blocks.1.cross_attn' -> 'decoder_blocks.1.cross_attn'"""
    return path.removeprefix("backbone.")
