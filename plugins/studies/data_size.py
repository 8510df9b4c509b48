"""Self-attention is a more flexible CNN, so it needs more data: a CNN and a transformer on
image patches at one parameter budget (experiment=compare_digits: the CNN's width is matched
to the transformer's parameter count) trained on a growing share of the training images
(task.train_fraction: a fixed class-stratified subset), on MNIST (7x7 grid of 4x4 patches)
and on scikit-learn's 8x8 digits (4x4 grid of 2x2 patches).

Every job takes the same number of optimizer steps whatever the fraction (a small subset is
seen for many epochs), so the comparison is at equal compute; it validates at fixed step
intervals on the whole validation split and tests on the full test split.
"""

from __future__ import annotations

from attnbench import register
from attnbench.study import Results, Stat, Study, Sweep, Verdict, beats

MODELS = ("cnn", "transformer")
FRACTIONS = [0.01, 0.03, 0.1, 0.3, 1.0]
# (steps per job, validate every): digits as compare_digits' 60 epochs of the full set (20
# steps each); MNIST 1,500 (1.7 epochs of the full set) so its 30 jobs fit the CPU budget,
# validated on its 5,000 images every 300 steps
FULL = {"mnist": (1500, 300), "digits": (1200, 100)}
QUICK = {"digits": (20, 20)}
QUICK_FRACTIONS = [0.1, 1.0]


def steps_overrides(steps: int, every: int) -> list[str]:
    """A fixed number of optimizer steps and validation every ``every`` steps, whatever an
    epoch's length (check_val_every_n_epoch=null: Lightning counts val_check_interval in
    steps across epochs)."""
    return [
        f"++trainer.max_steps={steps}",
        "trainer.max_epochs=-1",
        "trainer.check_val_every_n_epoch=null",
        f"++trainer.val_check_interval={every}",
    ]


def dataset_outcome(cnn: dict[float, Stat], tr: dict[float, Stat]) -> tuple[str, dict]:
    """'holds', 'partial' or 'fails' on one dataset (see the rule), with its numbers."""
    small, large = min(cnn), max(cnn)
    gap_small = cnn[small].mean - tr[small].mean
    gap_large = cnn[large].mean - tr[large].mean
    s = beats(cnn[small], tr[small])
    lg = tr[large].mean >= cnn[large].mean or gap_large <= gap_small / 2
    crossover = next((f for f in sorted(cnn) if tr[f].mean >= cnn[f].mean), None)
    numbers = {
        f"cnn - transformer at {small:g}": gap_small,
        f"cnn - transformer at {large:g}": gap_large,
        "(s) cnn > transformer at the smallest fraction": s,
        "(l) reversed or gap halved at the largest": lg,
        "crossover (smallest fraction where transformer >= cnn)": "none"
        if crossover is None
        else f"{crossover:g}",
    }
    return ("holds" if s and lg else "fails" if not (s or lg) else "partial"), numbers


@register("study", "data_size")
class DataSize(Study):
    claim = (
        "Self-attention is a more flexible CNN, so it needs more data: a CNN wins on little "
        "data and a parameter-matched transformer catches up (or overtakes) as data grows."
    )
    rule = (
        "On each data set, with A > B meaning A's mean test/acc exceeds B's by more than both "
        "stds together and gap = cnn mean - transformer mean: (s) cnn > transformer at the "
        "smallest fraction; (l) at the largest fraction the transformer's mean is >= the "
        "cnn's, or the gap is at most half the gap at the smallest fraction. The claim holds "
        "on a data set when (s) and (l) hold, fails when neither does, is partial otherwise. "
        "Supported when it holds on every data set run; refuted when it fails on every one; "
        "mixed otherwise; inconclusive when a model lacks a number at the smallest or "
        "largest fraction. The crossover (smallest fraction where the transformer's mean "
        "is >= the cnn's) is reported, not judged."
    )

    def sweeps(self, quick: bool) -> list[Sweep]:
        group = ["task.dataset", "task.train_fraction", "model.name"]
        fractions = QUICK_FRACTIONS if quick else FRACTIONS
        axes = {"task.train_fraction": fractions, "model": list(MODELS)}
        sweeps = []
        for dataset, (steps, every) in (QUICK if quick else FULL).items():
            base = [
                "experiment=compare_digits",
                f"task.dataset={dataset}",
                *steps_overrides(steps, every),
            ]
            if dataset == "mnist":
                base.append("task.patch=4")
            if quick:
                base += ["match_params.reference.d_model=16", "trainer.limit_test_batches=4"]
            sweeps.append(Sweep(dataset, base, axes, group))
        return sweeps

    def _curves(self, results: Results, dataset: str) -> dict[str, dict[float, Stat]]:
        curves: dict[str, dict[float, Stat]] = {m: {} for m in MODELS}
        for f in results.values("task.train_fraction", "test/acc", dataset):
            for m in MODELS:
                s = results.stat("test/acc", sweep=dataset, task_train_fraction=f, model_name=m)
                if not s.missing:
                    curves[m][float(f)] = s
        return curves

    def verdict(self, results: Results) -> Verdict:
        datasets = list(dict.fromkeys(r["sweep"] for r in results.rows))
        numbers: dict = {}
        if not datasets:
            return Verdict("inconclusive", numbers, "no run gave a number")
        outcomes = {}
        for dataset in datasets:
            curves = self._curves(results, dataset)
            fractions = sorted(set(curves["cnn"]) | set(curves["transformer"]))
            for f in fractions:
                for m in MODELS:
                    s = curves[m].get(f)
                    numbers[f"{dataset} {f:g} {m}"] = "–" if s is None else s.text()
            ends = (fractions[0], fractions[-1]) if fractions else ()
            if len(fractions) < 2 or any(f not in curves[m] for f in ends for m in MODELS):
                return Verdict("inconclusive", numbers, f"{dataset}: a model lacks an end fraction")
            both = sorted(set(curves["cnn"]) & set(curves["transformer"]))
            cnn = {f: curves["cnn"][f] for f in both}
            tr = {f: curves["transformer"][f] for f in both}
            outcomes[dataset], found = dataset_outcome(cnn, tr)
            numbers |= {f"{dataset}: {k}": v for k, v in found.items()}
            numbers[f"{dataset}: claim"] = outcomes[dataset]
        said = "; ".join(f"{d}: {o}" for d, o in outcomes.items())
        if all(o == "holds" for o in outcomes.values()):
            return Verdict("supported", numbers, said)
        if all(o == "fails" for o in outcomes.values()):
            return Verdict("refuted", numbers, said)
        return Verdict("mixed", numbers, said)

    def figure(self, results: Results):
        """test/acc against the training fraction (log scale), one panel per data set."""
        import matplotlib

        from attnbench.analysis.plot import STYLE
        from attnbench.study.figures import stat_line

        datasets = list(dict.fromkeys(r["sweep"] for r in results.rows))
        if not datasets:
            return None
        with matplotlib.rc_context(STYLE):
            from matplotlib.figure import Figure

            fig = Figure(figsize=(4.6 * len(datasets), 3.6))
            for ax, dataset in zip(fig.subplots(1, len(datasets), squeeze=False)[0], datasets):
                for i, (m, curve) in enumerate(self._curves(results, dataset).items()):
                    stat_line(ax, curve, 100.0, 100.0, color=f"C{i}", label=m)
                ax.set_xscale("log")
                ax.set_xlabel("training images used (%)")
                ax.set_ylabel("test/acc (×100)")
                ax.set_title(f"{dataset}: parameter-matched, equal steps", fontsize=9)
                ax.legend(fontsize=8)
            fig.suptitle("mean ± std over seeds", fontsize=9)
            fig.tight_layout()
        return fig
