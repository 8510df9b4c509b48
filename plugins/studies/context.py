"""Part-of-speech tagging needs context: a per-token MLP, a window MLP, a CNN, a BiLSTM and a
transformer at one parameter budget (experiment=compare_pos) on UD English EWT, scored on
all words and on the ambiguous ones only (seen with two or more tags in training: "I saw a
saw")."""

from __future__ import annotations

from pathlib import Path

import torch

from attnbench import register
from attnbench.study import Results, Stat, Study, Sweep, Verdict, beats

MODELS = ["mlp", "window_mlp", "cnn", "rnn", "transformer"]  # rnn: a 2-layer BiLSTM
CONTEXT = ("rnn", "transformer")


def ambiguous_words(sequences: list[torch.Tensor], tags: list[torch.Tensor]) -> torch.Tensor:
    """Word ids (feature column 0; 0 = padding, 1 = unknown left out) seen with >= 2
    distinct tags, as a boolean table over the vocabulary."""
    words = torch.cat([s[:, 0] for s in sequences])
    labels = torch.cat(list(tags))
    pairs = torch.unique(words * (int(labels.max()) + 1) + labels)  # distinct (word, tag)
    tags_per_word = torch.bincount(pairs // (int(labels.max()) + 1), minlength=2)
    table = tags_per_word >= 2
    table[:2] = False
    return table


def near(a: Stat, b: Stat) -> bool:
    """ "≈": the means differ by at most one accuracy point or the two stds together."""
    if a.missing or b.missing:
        return False
    return abs(a.mean - b.mean) <= max(0.01, a.spread() + b.spread())


@register("study", "context")
class Context(Study):
    claim = (
        "POS tagging needs context: per-token MLP < window MLP ≈ CNN < BiLSTM and "
        "transformer, and the gap is widest on ambiguous words."
    )
    rule = (
        "With A < B meaning B's mean test/acc exceeds A's by more than both stds together, "
        "and A ≈ B meaning the means differ by at most max(0.01, both stds): (1) mlp < "
        "window_mlp; (2) window_mlp ≈ cnn; (3) window_mlp and cnn are each < rnn and < "
        "transformer; (4) on ambiguous words (seen with >= 2 tags in training) the best "
        "context model's lead over mlp is larger than on all words. Supported when all four "
        "hold; refuted when (1) and (3) both fail; mixed otherwise. BiLSTM vs transformer "
        "is reported, not judged."
    )
    metrics = ("test/acc", "test/acc_ambiguous")

    def sweeps(self, quick: bool) -> list[Sweep]:
        axes, group = {"model": MODELS}, ["model.name"]
        if quick:
            tiny = [
                "task.dataset=synthetic",
                "trainer.max_epochs=1",
                "trainer.limit_train_batches=8",
                "match_params.reference.d_model=32",
            ]
            return [Sweep("pos", ["experiment=compare_pos", *tiny], axes, group)]
        # 6 of the preset's 10 epochs, so the 15 runs fit the 90-minute budget on a CPU
        return [Sweep("pos", ["experiment=compare_pos", "trainer.max_epochs=6"], axes, group)]

    def run_metrics(self, run_dir: Path) -> dict[str, float]:
        from attnbench.study.evaluate import load, token_accuracy

        loaded = load(run_dir)
        train = loaded.task.splits["train"]
        table = ambiguous_words(train.sequences, train.labels)

        def keep(batch: dict) -> torch.Tensor:
            return table[batch["tokens"].clamp(max=len(table) - 1)] & (batch["tokens"] < len(table))

        return {"test/acc_ambiguous": token_accuracy(loaded, "test", keep)}

    def verdict(self, results: Results) -> Verdict:
        acc = {m: results.stat("test/acc", model_name=m) for m in MODELS}
        amb = {m: results.stat("test/acc_ambiguous", model_name=m) for m in MODELS}
        numbers = {f"{m} acc": _text(acc[m]) for m in MODELS}
        numbers |= {f"{m} acc ambiguous": _text(amb[m]) for m in MODELS}
        if any(s.missing for s in (*acc.values(), *amb.values())):
            gone = [m for m in MODELS if acc[m].missing or amb[m].missing]
            return Verdict("inconclusive", numbers, f"no result for {', '.join(gone)}")
        best = max(CONTEXT, key=lambda m: acc[m].mean)
        checks = {
            "(1) mlp < window_mlp": beats(acc["window_mlp"], acc["mlp"]),
            "(2) window_mlp ≈ cnn": near(acc["window_mlp"], acc["cnn"]),
            "(3) window_mlp, cnn < rnn, transformer": all(
                beats(acc[c], acc[w]) for w in ("window_mlp", "cnn") for c in CONTEXT
            ),
            "(4) wider gap on ambiguous words": amb[best].mean - amb["mlp"].mean
            > acc[best].mean - acc["mlp"].mean,
        }
        numbers |= checks
        numbers[f"{best} - mlp, all words"] = acc[best].mean - acc["mlp"].mean
        numbers[f"{best} - mlp, ambiguous words"] = amb[best].mean - amb["mlp"].mean
        numbers["transformer - rnn"] = acc["transformer"].mean - acc["rnn"].mean
        held = [k for k, ok in checks.items() if ok]
        said = f"held: {', '.join(held) or 'none'}; failed: " + (
            ", ".join(k for k, ok in checks.items() if not ok) or "none"
        )
        if all(checks.values()):
            return Verdict("supported", numbers, said)
        if (
            not checks["(1) mlp < window_mlp"]
            and not checks["(3) window_mlp, cnn < rnn, transformer"]
        ):
            return Verdict("refuted", numbers, said)
        return Verdict("mixed", numbers, said)

    def figure(self, results: Results):
        from attnbench.study.figures import bar_grid

        return bar_grid(results, list(self.metrics), percent=True)


def _text(s: Stat) -> str:
    return f"{s.mean:.4f} ± {s.spread():.4f} (n={s.n})"
