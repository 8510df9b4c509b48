"""A graph already tells you who is related: on Cora (experiment=cora_graph: Planetoid split,
140 training labels), attention along the citation edges (attention=graph) against full
attention over all 2,708 nodes (attention=dot), which must find the related papers from
their words alone, and an MLP on each node's features alone (model=mlp: no relations at
all). One recipe for all three: the preset's 150 epochs, widths, dropout and optimiser;
the MLP drops only the transformer's model.heads.

Budget: 3 variants × 3 seeds. On this project's shared 2-core CPU at one thread a dot run
took 1,041 s, a graph run 42 s and an MLP run well under a minute, so the full study takes
about 56 min (dot: 52 of them); under heavier load (an 11 s dot epoch was measured with
eight other processes running) up to ~90 min. On a GPU, minutes.
"""

from __future__ import annotations

from pathlib import Path

from attnbench import register
from attnbench.study import Results, Stat, Study, Sweep, Verdict, beats, checked

TIME = "time/epoch_s"
VARIANTS = ("graph", "dot", "mlp")  # graph, dot: the transformer's attention; mlp: the model
LABELS = {"graph": "attention\nalong edges", "dot": "full\nattention", "mlp": "MLP\n(features)"}


@register("study", "graph")
class Graph(Study):
    claim = (
        "A graph already tells you who is related: attention restricted to the edges beats "
        "full attention, which must learn the relations, and a model of each node alone."
    )
    rule = (
        "With A beats B meaning A's mean test/acc exceeds B's by more than both standard "
        "deviations together: supported when graph attention beats both full (dot) "
        "attention and the MLP; refuted when it beats neither; mixed otherwise; "
        "inconclusive when a variant has no result. Dot vs MLP and the time per epoch are "
        "reported, not judged."
    )
    metrics = ("test/acc", TIME)

    def sweeps(self, quick: bool) -> list[Sweep]:
        base = ["experiment=cora_graph"]
        if quick:
            base += ["task.dataset=synthetic", "trainer.max_epochs=3", "model.d_model=32"]
        mlp = [*base, "model=mlp", "~model.heads"]  # an MLP has no heads; the rest is kept
        return [
            Sweep("attention", base, {"attention": ["graph", "dot"]}, ["attention.name"]),
            Sweep("mlp", mlp, {}, ["model.name"]),
        ]

    def run_metrics(self, run_dir: Path) -> dict[str, float]:
        from attnbench.study.evaluate import epoch_seconds

        return {TIME: epoch_seconds(run_dir)}

    def stats(self, results: Results, metric: str) -> dict[str, Stat]:
        return {
            "graph": results.stat(metric, sweep="attention", attention_name="graph"),
            "dot": results.stat(metric, sweep="attention", attention_name="dot"),
            "mlp": results.stat(metric, sweep="mlp", model_name="mlp"),
        }

    def verdict(self, results: Results) -> Verdict:
        acc, time = self.stats(results, "test/acc"), self.stats(results, TIME)
        numbers: dict[str, object] = {f"{v} acc": acc[v].text() for v in VARIANTS}
        numbers |= {f"{v} s/epoch": time[v].text() for v in VARIANTS}
        gone = [v for v in VARIANTS if acc[v].missing]
        if gone:
            return Verdict("inconclusive", numbers, f"no result for {', '.join(gone)}")
        checks = {
            "graph beats dot": beats(acc["graph"], acc["dot"]),
            "graph beats mlp": beats(acc["graph"], acc["mlp"]),
        }
        numbers["graph - dot"] = acc["graph"].mean - acc["dot"].mean
        numbers["graph - mlp"] = acc["graph"].mean - acc["mlp"].mean
        numbers["dot - mlp (not judged)"] = acc["dot"].mean - acc["mlp"].mean
        numbers["dot / graph time per epoch"] = time["dot"].mean / time["graph"].mean
        return checked(checks, numbers, refuted=not any(checks.values()))

    def figure(self, results: Results):
        """The three variants side by side (bar_grid would give the MLP's sweep a panel of
        its own): test accuracy and time per epoch, mean ± std over seeds."""
        import matplotlib

        from attnbench.analysis.plot import STYLE, new_figure

        panels = (("test/acc", 100.0, "test accuracy (%)"), (TIME, 1.0, "training s/epoch"))
        with matplotlib.rc_context(STYLE):
            fig, axes = new_figure(9.0, 3.6, 2)
            for ax, (metric, scale, label) in zip(axes, panels):
                found = self.stats(results, metric)
                shown = [v for v in VARIANTS if not found[v].missing]
                ax.bar(
                    range(len(shown)),
                    [found[v].mean * scale for v in shown],
                    yerr=[found[v].spread() * scale for v in shown],
                    capsize=4,
                    color=[f"C{VARIANTS.index(v)}" for v in shown],
                )
                ax.set_xticks(range(len(shown)), [LABELS[v] for v in shown], fontsize=8)
                ax.set_ylabel(label)
                ax.grid(axis="x", visible=False)
            axes[1].set_yscale("log")
            fig.suptitle(
                "node classification: attention along edges vs full attention vs features alone"
            )
            fig.subplots_adjust(left=0.08, right=0.98, bottom=0.15, top=0.88, wspace=0.3)
        return fig
