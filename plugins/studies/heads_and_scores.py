"""Single- vs multi-head attention and dot vs additive scoring, at one width: the transformer
with attention=multihead (model.heads 1 or 4 split the same d_model; attention.score dot or
additive per head) on SST-2 (sst2_transformer: 2 epochs) and UD English EWT POS
(pos_ud_transformer, RoPE, at 4 of its 12 epochs: ~0.94 of its 0.948 in a third of the
time), scored on test accuracy and training time per epoch (the median epoch, validation
left out).

Budget: 2 tasks × 4 variants × 3 seeds = 24 runs. On this project's shared 2-core CPU at
one thread a dot run takes about 90 s (SST-2) and 100 s (POS), an additive one about 1.8x
that (100 SST-2 batches: 13-16 s dot, 22-29 s additive, measured under load), so the full
study takes about 55 min when the CPU is not shared, up to twice that under heavy load.
"""

from __future__ import annotations

from pathlib import Path

from attnbench import register
from attnbench.study import Results, Stat, Study, Sweep, Verdict, beats, checked

HEADS = (1, 4)
SCORES = ("dot", "additive")
TASKS = ("sst2", "pos")
TIME = "time/epoch_s"


@register("study", "heads_and_scores")
class HeadsAndScores(Study):
    claim = (
        "Several heads attend better than one at the same width, and scaled dot-product "
        "scoring is as accurate as additive scoring while being much faster."
    )
    rule = (
        "On each task (SST-2, POS), with A beats B meaning A's mean exceeds B's by more than "
        "both standard deviations together: (H) 4 heads beat 1 head in test/acc with at least "
        "one score, and 1 head beats 4 with neither; (A) additive does not beat dot in "
        "test/acc at either head count; (T) additive's training time per epoch beats (is "
        "longer than) dot's at both head counts. Supported when all six checks (3 per task) "
        "hold; refuted when at most three hold; mixed otherwise; inconclusive when a variant "
        "has no result."
    )
    metrics = ("test/acc", TIME)

    def sweeps(self, quick: bool) -> list[Sweep]:
        axes = {"model.heads": list(HEADS), "attention.score": list(SCORES)}
        group = ["model.heads", "attention.score"]
        sst2 = ["experiment=sst2_transformer", "attention=multihead"]
        pos = ["experiment=pos_ud_transformer", "attention=multihead", "trainer.max_epochs=4"]
        if quick:
            tiny = [
                "task.dataset=synthetic",
                "trainer.max_epochs=1",
                "trainer.limit_train_batches=6",
                "trainer.limit_val_batches=2",
                "trainer.limit_test_batches=4",
                "model.d_model=32",
            ]
            sst2, pos = [*sst2, *tiny], [*pos, *tiny]
        return [Sweep("sst2", sst2, axes, group), Sweep("pos", pos, axes, group)]

    def run_metrics(self, run_dir: Path) -> dict[str, float]:
        from attnbench.study.evaluate import epoch_seconds

        return {TIME: epoch_seconds(run_dir)}

    def verdict(self, results: Results) -> Verdict:
        def stat(metric: str, task: str, heads: int, score: str) -> Stat:
            return results.stat(metric, sweep=task, model_heads=heads, attention_score=score)

        numbers: dict[str, object] = {}
        gone = []
        for task in TASKS:
            for h in HEADS:
                for score in SCORES:
                    acc, time = stat("test/acc", task, h, score), stat(TIME, task, h, score)
                    numbers[f"{task} h={h} {score}: acc"] = acc.text()
                    numbers[f"{task} h={h} {score}: s/epoch"] = time.text()
                    if acc.missing or time.missing:
                        gone.append(f"{task} heads={h} score={score}")
        if gone:
            return Verdict("inconclusive", numbers, f"no result for {', '.join(gone)}")
        checks = {}
        for task in TASKS:
            acc = {(h, s): stat("test/acc", task, h, s) for h in HEADS for s in SCORES}
            time = {(h, s): stat(TIME, task, h, s) for h in HEADS for s in SCORES}
            many, one = HEADS[1], HEADS[0]
            checks[f"{task} (H) 4 heads beat 1"] = any(
                beats(acc[many, s], acc[one, s]) for s in SCORES
            ) and not any(beats(acc[one, s], acc[many, s]) for s in SCORES)
            checks[f"{task} (A) additive not above dot"] = not any(
                beats(acc[h, "additive"], acc[h, "dot"]) for h in HEADS
            )
            checks[f"{task} (T) dot faster"] = all(
                beats(time[h, "additive"], time[h, "dot"]) for h in HEADS
            )
            for h in HEADS:
                numbers[f"{task} h={h}: additive / dot time"] = (
                    time[h, "additive"].mean / time[h, "dot"].mean
                )
        held = sum(checks.values())
        numbers["checks held"] = f"{held} of {len(checks)}"
        return checked(checks, numbers, refuted=held <= len(checks) // 2)

    def figure(self, results: Results):
        from attnbench.study.figures import bar_grid

        return bar_grid(results, list(self.metrics), percent=True)
