"""Accuracy against the distance between dependent positions: an LSTM, a CNN, a transformer
with full (dot) attention and one with truncated attention on the adding problem
(task=longrange, task.dataset=adding) as the sequence length N grows, at one parameter
budget (experiment=compare_backbones).

The task reads out at the LAST position (task.pooling=last): mean pooling would let a
per-position model sum the two marked values without relating any two positions. The first
marked value lies between N/2 and N-1 positions before the readout, so a model reaching R
positions back sees it at every length with N - 1 <= R and at none with N / 2 > R. The
reach is computed from each run's own config: window x layers for truncated attention,
sum_i ((kernel - 1) * dilation**i) // 2 for the CNN (the look-back of a 'same'-padded
stack, half of its receptive field).
"""

from __future__ import annotations

import json
from pathlib import Path

from attnbench import register
from attnbench.study import Results, Stat, Study, Sweep, Verdict, beats, checked

BINS = 4  # classes of the sum: chance 0.25, 0.45 knowing one of the two values
REACH = "reach"  # metric: positions the readout sees back (cnn, truncated runs)

# (kernel, dilation, layers) of the CNN and (window, layers) of the truncated transformer
FULL = {"lengths": [32, 64, 128, 256, 512], "cnn": (3, 2, 6), "window": 16, "layers": 2}
QUICK = {"lengths": [4, 16], "cnn": (3, 2, 2), "window": 2, "layers": 2}
MODELS = {"lstm": "LSTM", "cnn": "CNN", "dot": "transformer (dot)", "truncated": "truncated"}


def cnn_reach(kernel: int, dilation: int, layers: int) -> int:
    """How far back the last position of a 'same'-padded conv stack sees: each layer pads
    (kernel - 1) * dilation**i // 2 on the left (plugins/models/cnn.py, ConvBlock._pad)."""
    return sum((kernel - 1) * dilation**i // 2 for i in range(layers))


def lengths_within(lengths: list[int], reach: float) -> list[int]:
    """Lengths at which every first marker (N/2 .. N-1 back) is within reach."""
    return [n for n in lengths if n - 1 <= reach]


def lengths_beyond(lengths: list[int], reach: float) -> list[int]:
    """Lengths at which no first marker is within reach."""
    return [n for n in lengths if n / 2 > reach]


@register("study", "long_range")
class LongRange(Study):
    claim = (
        "Recurrence fades with the distance between dependent positions while full "
        "attention holds; truncated attention fails beyond its window and a CNN beyond its "
        "receptive field."
    )
    rule = (
        "acc(m, N) is test/acc of model m at length N (mean ± std over seeds); A > B means "
        "A's mean exceeds B's by more than both stds together. N0, N1: the shortest and "
        "longest length. (a) recurrence fades: acc(lstm, N0) > acc(lstm, N1). (b) full "
        "attention holds: NOT acc(dot, N0) > acc(dot, N1), and acc(dot, N1) > acc(lstm, N1). "
        "(c) truncated fails beyond its reach R = window x layers: with Nin the longest length "
        "with N - 1 <= R and Nout the shortest with N / 2 > R (the first marker lies N/2..N-1 "
        "before the readout), acc(truncated, Nin) > acc(truncated, Nout) and acc(dot, Nout) > "
        "acc(truncated, Nout). (d) the same for the CNN with R its look-back, sum_i "
        "((kernel-1) x dilation^i) // 2. Supported when (a)-(d) all hold; refuted when (a) "
        "and (b) both fail; mixed otherwise; inconclusive when a number is missing or no "
        "length lies within or beyond a reach."
    )
    metrics = ("test/acc", REACH)

    def sweeps(self, quick: bool) -> list[Sweep]:
        s = QUICK if quick else FULL
        kernel, dilation, layers = s["cnn"]
        base = [
            "experiment=compare_backbones",
            "task=longrange",
            "task.dataset=adding",
            "task.pooling=last",
            f"task.bins={BINS}",
            "task.batch_size=32",
            "optim.lr=3e-3",
            "optim.warmup_steps=20",
            f"match_params.reference.layers={s['layers']}",
        ]
        if quick:
            base += [
                "task.train_size=256",
                "task.eval_size=128",
                "trainer.max_epochs=1",
                "match_params.reference.d_model=16",
            ]
        else:  # 500 steps of 32: the most the 60 jobs afford in 90 min on one CPU thread
            base += [
                "task.train_size=2000",
                "task.eval_size=500",
                "trainer.max_epochs=8",
                "match_params.reference.d_model=64",
            ]
        models = {
            "lstm": ["model=rnn", "model.bidirectional=false"],
            "cnn": [
                "model=cnn",
                f"model.kernel_size={kernel}",
                f"model.dilation={dilation}",
                f"model.layers={layers}",
            ],
            "dot": ["model=transformer", "attention=dot"],
            "truncated": [
                "model=transformer",
                "attention=truncated",
                f"attention.window={s['window']}",
            ],
        }
        axes = {"task.length": s["lengths"]}
        return [
            Sweep(name, [*base, *extra], axes, ["task.length"]) for name, extra in models.items()
        ]

    def run_metrics(self, run_dir: Path) -> dict[str, float]:
        plugins = json.loads((run_dir / "summary.json").read_text())["plugins"]
        model, attention = plugins["model"], plugins.get("attention", {})
        if model["name"] == "cnn":
            return {REACH: cnn_reach(model["kernel_size"], model["dilation"], model["layers"])}
        if model["name"] == "transformer" and attention.get("name") == "truncated":
            return {REACH: attention["window"] * model["layers"]}
        return {}

    def verdict(self, results: Results) -> Verdict:
        acc = {m: self._by_length(results, m) for m in MODELS}
        numbers: dict = {}
        lengths = sorted(set().union(*(a.keys() for a in acc.values())))
        if len(lengths) < 2:
            return Verdict("inconclusive", numbers, "fewer than two lengths gave a number")
        n0, n1 = lengths[0], lengths[-1]
        for m in MODELS:
            for n in lengths:
                s = acc[m].get(n)
                numbers[f"{m} N={n}"] = "–" if s is None else s.text()
        need = [(m, n) for m in MODELS for n in (n0, n1) if acc[m].get(n) is None]
        if need:
            said = ", ".join(f"{m} at N={n}" for m, n in need)
            return Verdict("inconclusive", numbers, f"no result for {said}")
        checks = {
            "(a) recurrence fades": beats(acc["lstm"][n0], acc["lstm"][n1]),
            "(b) full attention holds": not beats(acc["dot"][n0], acc["dot"][n1])
            and beats(acc["dot"][n1], acc["lstm"][n1]),
        }
        for m, label in (("truncated", "(c) truncated fails beyond its window"),
                         ("cnn", "(d) CNN fails beyond its receptive field")):  # fmt: skip
            reach = results.stat(REACH, sweep=m)
            if reach.missing:
                return Verdict("inconclusive", numbers, f"no {m} run recorded its reach")
            inside = lengths_within(lengths, reach.mean)
            outside = lengths_beyond(lengths, reach.mean)
            numbers[f"{m} reach"] = reach.mean
            if not inside or not outside:
                return Verdict(
                    "inconclusive", numbers, f"no length lies within and beyond the {m} reach"
                )
            n_in, n_out = inside[-1], outside[0]
            numbers[f"{m} Nin, Nout"] = f"{n_in}, {n_out}"
            a_in, a_out, dot_out = acc[m].get(n_in), acc[m].get(n_out), acc["dot"].get(n_out)
            if a_in is None or a_out is None or dot_out is None:
                return Verdict("inconclusive", numbers, f"no {m}/dot result at N={n_in}, {n_out}")
            checks[label] = beats(a_in, a_out) and beats(dot_out, a_out)
        refuted = not checks["(a) recurrence fades"] and not checks["(b) full attention holds"]
        return checked(checks, numbers, refuted)

    @staticmethod
    def _by_length(results: Results, sweep: str) -> dict[int, Stat]:
        found = {}
        for n in results.values("task.length", "test/acc", sweep):
            s = results.stat("test/acc", sweep=sweep, task_length=n)
            if not s.missing:
                found[int(n)] = s
        return found

    def figure(self, results: Results):
        """test/acc against N (log scale), ± std; each restricted model's reach marked: a
        band from the length where its first marker starts to leave the reach (N = R + 1)
        to where it never is in reach (N = 2R)."""
        import matplotlib

        from attnbench.analysis.plot import STYLE
        from attnbench.study.figures import stat_line

        with matplotlib.rc_context(STYLE):
            from matplotlib.figure import Figure

            fig = Figure(figsize=(6.4, 4.0))
            ax = fig.subplots()
            for i, (m, label) in enumerate(MODELS.items()):
                by_n = self._by_length(results, m)
                if not by_n:
                    continue
                stat_line(ax, by_n, 100.0, color=f"C{i}", label=label)
                reach = results.stat(REACH, sweep=m)
                if not reach.missing:
                    r = reach.mean
                    ax.axvspan(r + 1, 2 * r, color=f"C{i}", alpha=0.12)
                    ax.axvline(r + 1, color=f"C{i}", linestyle="--", linewidth=1)
                    ax.text(r + 1, 101, f"{m} reach {r:g}", color=f"C{i}", fontsize=7,
                            rotation=90, va="top", ha="right")  # fmt: skip
            ax.axhline(100 / BINS, color="grey", linestyle=":", linewidth=1, label="chance")
            ax.set_xscale("log", base=2)
            ax.set_xlabel("sequence length N (first marker N/2..N-1 before the readout)")
            ax.set_ylabel("test/acc (×100)")
            ax.set_ylim(0, 102)
            ax.set_title("adding problem, read out at the last position; mean ± std over seeds",
                         fontsize=9)  # fmt: skip
            ax.legend(fontsize=7, loc="lower left")
            fig.tight_layout()
        return fig
