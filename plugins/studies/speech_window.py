"""Windowed attention on long speech: per-frame labelling of spoken digits (experiment=
speech_frames: FSDD, 24 recordings joined into utterances of ~1,340 frames, every 10 ms
frame labelled with its digit or "gap") with truncated attention at windows of 2-32 frames
against full attention (dot), on the preset's recipe (the reference transformer: d_model 64,
4 heads, 3 layers; 12 epochs).

Two numbers per run besides its accuracy: the training time per epoch (the median epoch,
validation left out) and the attention's own cost, ``attn/test_ms``: one attention layer of
the trained model, forward + backward at each of the test split's batch shapes (13
utterances: batches of 8 and 5 of ~1,340-1,600 frames), timed with the bench's loop
(attnbench.bench.measure: median of >= 3 passes after a warm-up) and summed; ``attn/peak_mb``
is the largest peak memory of those passes.

Budget: 6 variants × 2 seeds (not 3: a dot run takes ~10 min on this project's shared
2-core CPU at one thread, a truncated one 3-4 min, so three seeds would not fit 90 min):
about 60 min on that CPU.
"""

from __future__ import annotations

import copy
from pathlib import Path

from attnbench import register
from attnbench.study import MISSING, Results, Stat, Study, Sweep, Verdict, beats, checked

WINDOWS = [2, 4, 8, 16, 32]
QUICK_WINDOWS = [2, 8]
ATTN = "attn/test_ms"
PEAK = "attn/peak_mb"
TIME = "time/epoch_s"


def attention_cost(module, shapes: list[tuple[int, int]]) -> tuple[float, float]:
    """(ms summed over the shapes, largest peak MiB) of ``module``'s forward + backward on
    random (B, N, d) inputs, one bench.measure per shape."""
    import argparse

    import torch

    from attnbench import bench

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    module = copy.deepcopy(module).to(device).train()
    total, peak = 0.0, 0.0
    for b, n in shapes:
        args = argparse.Namespace(
            batch=b,
            d_model=module.d_model,
            dtype="bf16" if device.type == "cuda" else "fp32",
            warmup=1,
            repeats=3,
            min_time=0.3,
            time_limit=60.0,
            compile=False,
        )
        ms, mb, _ = bench.measure(module, n, args, None, device)
        total, peak = total + ms, max(peak, mb)
    return total, peak


@register("study", "speech_window")
class SpeechWindow(Study):
    claim = (
        "Labelling speech frame by frame needs only local context: truncated attention with "
        "a window of a few frames matches full attention's accuracy at a fraction of its "
        "cost, and the window trades accuracy against time."
    )
    rule = (
        "With A beats B meaning A's mean exceeds B's by more than both standard deviations "
        "together, and 'best window' the window with the highest mean test/acc: (1) matches: "
        "dot does not beat the best window in test/acc; (2) cheaper: dot's attention time "
        "(attn/test_ms) beats every window's; (3) trade-off: the best window beats the "
        "smallest window in test/acc, and the largest window's attention time beats the "
        "smallest's. Supported when (1), (2) and (3) hold; refuted when (1) and (2) both "
        "fail; mixed otherwise; inconclusive when dot or fewer than two windows have "
        "results (accuracy and attention time)."
    )
    metrics = ("test/acc", ATTN, TIME, PEAK)
    seeds = 2

    def sweeps(self, quick: bool) -> list[Sweep]:
        base = ["experiment=speech_frames"]
        windows = WINDOWS
        if quick:
            base += [
                "task.dataset=synthetic",
                "task.k=3",
                "trainer.max_epochs=1",
                "trainer.limit_train_batches=4",
                "trainer.limit_val_batches=1",
                "match_params.reference.d_model=32",
            ]
            windows = QUICK_WINDOWS
        return [
            Sweep(
                "window",
                [*base, "attention=truncated"],
                {"attention.window": windows},
                ["attention.name", "attention.window"],
            ),
            Sweep("dot", [*base, "attention=dot"], {}, ["attention.name"]),
        ]

    def run_metrics(self, run_dir: Path) -> dict[str, float]:
        from attnbench.nn.attention import Attention
        from attnbench.study.evaluate import epoch_seconds, load

        loaded = load(run_dir)
        shapes = [tuple(b["frames"].shape[:2]) for b in loaded.task.dataloader("test")]
        layer = next(m for m in loaded.net.modules() if isinstance(m, Attention))
        ms, mb = attention_cost(layer, shapes)
        return {ATTN: ms, PEAK: mb, TIME: epoch_seconds(run_dir)}

    def window_stats(self, results: Results, metric: str) -> dict[int, Stat]:
        found = results.values("attention.window", metric, sweep="window")
        return {
            w: results.stat(metric, sweep="window", attention_window=w)
            for w in sorted(v for v in found if isinstance(v, int))
        }

    def verdict(self, results: Results) -> Verdict:
        acc, cost = self.window_stats(results, "test/acc"), self.window_stats(results, ATTN)
        dot_acc = results.stat("test/acc", sweep="dot", attention_name="dot")
        dot_cost = results.stat(ATTN, sweep="dot", attention_name="dot")
        numbers: dict[str, object] = {"dot acc": dot_acc.text(), "dot attn ms": dot_cost.text()}
        for w in acc:
            numbers[f"window {w} acc"] = acc[w].text()
            numbers[f"window {w} attn ms"] = cost.get(w, MISSING).text()
        windows = [w for w in acc if not acc[w].missing and w in cost and not cost[w].missing]
        if dot_acc.missing or dot_cost.missing or len(windows) < 2:
            return Verdict("inconclusive", numbers, "dot or fewer than two windows have results")
        small, large = windows[0], windows[-1]
        best = max(windows, key=lambda w: acc[w].mean)
        checks = {
            f"(1) dot does not beat the best window ({best})": not beats(dot_acc, acc[best]),
            "(2) every window's attention is cheaper than dot's": all(
                beats(dot_cost, cost[w]) for w in windows
            ),
            f"(3) window {best} beats window {small} in accuracy, window {large} costs more "
            f"than window {small}": beats(acc[best], acc[small])
            and beats(cost[large], cost[small]),
        }
        numbers["best window"] = best
        numbers[f"dot / window {best} attention time"] = dot_cost.mean / cost[best].mean
        numbers[f"dot - window {best} acc"] = dot_acc.mean - acc[best].mean
        matches, cheaper, _ = checks.values()
        return checked(checks, numbers, refuted=not matches and not cheaper)

    def figure(self, results: Results):
        import matplotlib

        from attnbench.analysis.plot import STYLE, new_figure

        panels = (
            ("test/acc", 100.0, "per-frame test accuracy (%)"),
            (ATTN, 1.0, "attention fwd+bwd over the test shapes (ms)"),
        )
        with matplotlib.rc_context(STYLE):
            fig, axes = new_figure(11.0, 4.0, 2)
            for ax, (metric, scale, label) in zip(axes, panels):
                found = self.window_stats(results, metric)
                shown = [w for w, s in found.items() if not s.missing]
                if shown:
                    ax.errorbar(
                        shown,
                        [found[w].mean * scale for w in shown],
                        yerr=[found[w].spread() * scale for w in shown],
                        marker="o",
                        capsize=3,
                        label="truncated (window w)",
                    )
                dot = results.stat(metric, sweep="dot", attention_name="dot")
                if not dot.missing:
                    ax.axhline(dot.mean * scale, color="C1", label="full attention (dot)")
                    ax.axhspan(
                        (dot.mean - dot.spread()) * scale,
                        (dot.mean + dot.spread()) * scale,
                        color="C1",
                        alpha=0.15,
                    )
                ax.set_xscale("log", base=2)
                ax.set_xlabel("window w (frames each side)")
                ax.set_ylabel(label)
                ax.legend(fontsize=7)
            axes[1].set_yscale("log")
            fig.suptitle("speech frames: truncated attention vs window, against full attention")
            fig.subplots_adjust(left=0.07, right=0.98, bottom=0.13, top=0.9, wspace=0.25)
        return fig
