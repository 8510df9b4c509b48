"""Where the heads of a vision transformer look, against a CNN's fixed receptive field: mean
attention distance per head and layer (Dosovitskiy et al. 2021, Fig. 7; ``attnbench maps
RUN --stats``, attnbench.analysis.stats) of the digits transformer (experiment=compare_digits:
8x8 digits as a 4x4 grid of 2x2 patches, 3 layers x 4 heads), beside the parameter-matched
CNN of the same preset.

Distances are in patch-grid units. To put the CNN on the same scale, a convolution window is
read as an attention head that weighs the patches of its window uniformly: its mean distance
over the grid's patches (window clipped at the border), the number a head attending like that
convolution would get from the same statistic.
"""

from __future__ import annotations

import math
from pathlib import Path

from attnbench import register
from attnbench.study import Results, Study, Sweep, Verdict, beats, checked

LAYERS, HEADS = 3, 4  # the transformer of compare_digits, pinned in its sweep
CNN = {"kernel_size": 3, "dilation": 2, "layers": 4}  # the CNN plugin's defaults, pinned
GRID = (4, 4)  # 8x8 digits in 2x2 patches
LOCAL, GLOBAL = "heads/local", "heads/global"
KERNEL, UNIFORM = "dist/kernel", "dist/uniform"


def layer_metrics(layer: int) -> tuple[str, str, str]:
    return f"dist/L{layer}", f"dist/L{layer}/min", f"dist/L{layer}/max"


def window_distance(rows: int, cols: int, radius: float | None) -> float:
    """Mean Euclidean distance from each grid cell to the cells within ``radius`` of it
    (Chebyshev, clipped at the border; None: the whole grid), averaged over the cells: the
    mean attention distance of a head that weighs that window uniformly."""
    cells = [(r, c) for r in range(rows) for c in range(cols)]
    total = 0.0
    for r, c in cells:
        seen = [(y, x) for y, x in cells if radius is None or max(abs(y - r), abs(x - c)) <= radius]
        total += sum(math.dist((r, c), p) for p in seen) / len(seen)
    return total / len(cells)


def cnn_radius(kernel_size: int, dilation: int, layer: int) -> float:
    """Half-width (patches) of the receptive field after ``layer`` 'same'-padded conv layers
    (layer i dilated by dilation**i): sum_i (kernel - 1) * dilation**i / 2."""
    return sum((kernel_size - 1) * dilation**i / 2 for i in range(layer))


@register("study", "receptive_field")
class ReceptiveField(Study):
    claim = (
        "Attention heads learn their own receptive field: early layers attend locally, "
        "like a convolution, later ones globally, and within a model some heads are local "
        "(within a CNN's kernel) while others look across the whole image."
    )
    rule = (
        "Per trained transformer, each head's mean attention distance on the test split "
        "(patch-grid units). d_kernel = the mean distance of a head weighing the CNN's "
        "first-layer k x k window uniformly (clipped to the grid, averaged over patches); "
        "d_uniform = the same for the whole grid. A head is local when its distance is "
        "<= d_kernel and global when it is nearer d_uniform than d_kernel (above their "
        "midpoint). (1) depth: the last layer's mean distance over heads exceeds the first "
        "layer's by more than both stds over seeds; (2) local heads: at least 1 local head "
        "per model on average over seeds; (3) global heads: at least 1 global head per model "
        "on average. Supported when (1)-(3) hold; refuted when (1) fails and (2) or (3) "
        "fails; mixed otherwise; inconclusive when the transformer gave no distances."
    )
    metrics = (
        "test/acc",
        *(m for layer in range(LAYERS) for m in layer_metrics(layer)),
        LOCAL,
        GLOBAL,
        KERNEL,
        UNIFORM,
    )

    def sweeps(self, quick: bool) -> list[Sweep]:
        tiny = ["trainer.max_epochs=2", "trainer.limit_train_batches=4"] if quick else []
        width = ["match_params.reference.d_model=16"] if quick else []
        pinned = [
            "experiment=compare_digits",
            "task.patch=2",
            f"match_params.reference.layers={LAYERS}",
            f"match_params.reference.heads={HEADS}",
        ]
        cnn = [f"model.{k}={v}" for k, v in CNN.items()]
        group = ["model.name"]
        return [
            Sweep("transformer", [*pinned, *tiny, *width], {"model": ["transformer"]}, group),
            Sweep("cnn", [*pinned, *cnn, *tiny, *width], {"model": ["cnn"]}, group),
        ]

    def run_metrics(self, run_dir: Path) -> dict[str, float]:
        from attnbench.analysis.examples import kind_of
        from attnbench.analysis.maps import head_stats
        from attnbench.study.evaluate import load

        loaded = load(run_dir)
        if loaded.plugins["model"][0] != "transformer":
            return {}  # the CNN: accuracy only
        rows = [
            r
            for r in head_stats(loaded, "test", 20, kind_of(loaded.task))
            if r["attention"] == "self"
        ]
        by_layer: dict[int, list[float]] = {}
        for r in rows:
            by_layer.setdefault(r["layer"], []).append(r["mean_distance"])
        if sorted(by_layer) != list(range(LAYERS)):
            raise ValueError(f"expected {LAYERS} attention layers, found {len(by_layer)}")
        _, h, w = loaded.task.shape
        grid = (h // loaded.task.patch, w // loaded.task.patch)
        kernel = window_distance(*grid, cnn_radius(CNN["kernel_size"], 1, 1))
        uniform = window_distance(*grid, None)
        found = {KERNEL: kernel, UNIFORM: uniform}
        for layer, dists in by_layer.items():
            mean, low, high = layer_metrics(layer)
            found |= {mean: sum(dists) / len(dists), low: min(dists), high: max(dists)}
        every = [d for dists in by_layer.values() for d in dists]
        found[LOCAL] = sum(d <= kernel for d in every)
        found[GLOBAL] = sum(d > (kernel + uniform) / 2 for d in every)
        return found

    def verdict(self, results: Results) -> Verdict:
        first = results.stat(layer_metrics(0)[0], sweep="transformer")
        last = results.stat(layer_metrics(LAYERS - 1)[0], sweep="transformer")
        local = results.stat(LOCAL, sweep="transformer")
        wide = results.stat(GLOBAL, sweep="transformer")
        numbers: dict = {}
        if any(s.missing for s in (first, last, local, wide)):
            return Verdict("inconclusive", numbers, "the transformer gave no head distances")
        for layer in range(LAYERS):
            stat = results.stat(layer_metrics(layer)[0], sweep="transformer")
            numbers[f"layer {layer} mean distance"] = stat.text()
        numbers["d_kernel"] = results.stat(KERNEL, sweep="transformer").mean
        numbers["d_uniform"] = results.stat(UNIFORM, sweep="transformer").mean
        numbers["local heads per model"] = local.mean
        numbers["global heads per model"] = wide.mean
        checks = {
            "(1) last layer farther than the first": beats(last, first),
            "(2) local heads": local.mean >= 1,
            "(3) global heads": wide.mean >= 1,
        }
        one, two, three = checks.values()
        return checked(checks, numbers, refuted=not one and not (two and three))

    def figure(self, results: Results):
        """Mean distance per layer (line: mean over heads ± std over seeds; band: nearest
        to farthest head), the CNN's receptive field per layer on the same scale, and the
        local / global thresholds."""
        import matplotlib

        from attnbench.analysis.plot import STYLE

        stats = [
            [results.stat(m, sweep="transformer") for m in layer_metrics(layer)]
            for layer in range(LAYERS)
        ]
        with matplotlib.rc_context(STYLE):
            from matplotlib.figure import Figure

            fig = Figure(figsize=(6.0, 4.0))
            ax = fig.subplots()
            depth = [layer + 1 for layer in range(LAYERS)]
            if not any(s[0].missing for s in stats):
                ax.fill_between(
                    depth,
                    [s[1].mean for s in stats],
                    [s[2].mean for s in stats],
                    color="C0",
                    alpha=0.2,
                    label="transformer: nearest to farthest head",
                )
                ax.errorbar(
                    depth,
                    [s[0].mean for s in stats],
                    yerr=[s[0].spread() for s in stats],
                    marker="o",
                    capsize=3,
                    color="C0",
                    label="transformer: mean over heads",
                )
            cnn_depth = list(range(1, CNN["layers"] + 1))
            cnn = [
                window_distance(*GRID, cnn_radius(CNN["kernel_size"], CNN["dilation"], layer))
                for layer in cnn_depth
            ]
            ax.step(cnn_depth, cnn, where="mid", color="C1", label="CNN receptive field")
            kernel, uniform = (results.stat(m, sweep="transformer") for m in (KERNEL, UNIFORM))
            if not kernel.missing:
                ax.axhline(kernel.mean, color="C1", linestyle="--", linewidth=1,
                           label="local ≤ one conv kernel")  # fmt: skip
                ax.axhline((kernel.mean + uniform.mean) / 2, color="grey", linestyle=":",
                           linewidth=1, label="global > midpoint")  # fmt: skip
                ax.axhline(uniform.mean, color="grey", linestyle="-", linewidth=1,
                           label="uniform over the image")  # fmt: skip
            ax.set_xlabel("layer")
            ax.set_xticks(cnn_depth)
            ax.set_ylabel("mean attention distance (patches)")
            ax.set_ylim(bottom=0)
            ax.set_title("digits, 4x4 patch grid; mean over seeds", fontsize=9)
            ax.legend(fontsize=7)
            fig.tight_layout()
        return fig
