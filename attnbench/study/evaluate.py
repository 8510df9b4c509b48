"""Numbers a study computes from a finished run's trained model (its run_metrics hook): the
model is rebuilt from the run directory (attnbench.analysis.loading, weights_only) and run
on a split in eval mode, without Lightning.

Batches are dicts whose ``tokens`` (B, N) are right-padded with id 0, as every sequence task's
collate function pads them; per-token labels are padded with -100.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from attnbench.analysis.loading import LoadedRun, load_run


def load(run_dir: Path) -> LoadedRun:
    return load_run(run_dir)


def epoch_seconds(run_dir: Path) -> float:
    """The run's median training epoch in seconds (summary.json's epoch_seconds, validation
    left out): one epoch slowed by other work on a shared machine does not move it."""
    times = json.loads((run_dir / "summary.json").read_text()).get("epoch_seconds") or []
    return statistics.median(times) if times else float("nan")


@torch.no_grad()
def outputs(loaded: LoadedRun, split: str, transform=None) -> Iterator[tuple[dict, Tensor, Any]]:
    """(batch, logits, extra) for every batch of ``split``; ``transform(batch) -> (batch,
    extra)`` rewrites a batch first (a permutation, say)."""
    task, net = loaded.task, loaded.net.eval()
    for batch in task.dataloader(split):
        extra = None
        if transform is not None:
            batch, extra = transform(batch)
        yield batch, task.forward(net, batch, "test"), extra


def token_accuracy(loaded: LoadedRun, split: str, keep: Callable[[dict], Tensor]) -> float:
    """Accuracy of a per-token tagger over the scored tokens where ``keep(batch)`` (B, N)
    is True; NaN when no token is kept."""
    right = total = 0
    for batch, logits, _ in outputs(loaded, split):
        mask = keep(batch) & (batch["label"] != -100)  # (B, N)
        right += int((logits.argmax(-1)[mask] == batch["label"][mask]).sum())
        total += int(mask.sum())
    return right / total if total else float("nan")


def permute_tokens(batch: dict, generator: torch.Generator) -> tuple[dict, Tensor]:
    """Shuffle each sequence's real tokens (padding stays at the end): every tensor of the
    batch whose first two dims are (B, N) moves along N. Returns the batch and perm (B, N):
    position i of the new batch holds old position perm[b, i]."""
    tokens = batch["tokens"]
    b, n = tokens.shape[:2]
    lengths = (tokens != 0).sum(1)  # right-padded with 0
    keys = torch.rand(b, n, generator=generator)
    keys = keys.masked_fill(torch.arange(n) >= lengths[:, None], 2.0)  # padding sorts last
    perm = keys.argsort(dim=1)  # (B, N)
    moved = {}
    for name, value in batch.items():
        if isinstance(value, Tensor) and value.dim() >= 2 and value.shape[:2] == (b, n):
            index = perm.view(b, n, *([1] * (value.dim() - 2))).expand_as(value)
            moved[name] = value.gather(1, index)
        else:
            moved[name] = value
    return moved, perm


def permutation_test(loaded: LoadedRun, split: str = "test", seed: int = 0) -> dict[str, float]:
    """How the trained model answers when each input's tokens are shuffled.

    ``agree``: the fraction of predictions that stay the same (per sequence for a
    classifier; per token, followed to its new place, for a tagger): 1.0 for a model that
    ignores order (permutation invariant / equivariant). ``acc``: accuracy on the shuffled
    inputs (a tagger's labels move with their tokens; a classifier keeps its label)."""
    g = torch.Generator().manual_seed(seed)
    plain = [logits.argmax(-1) for _, logits, _ in outputs(loaded, split)]
    same = seen = right = scored = 0
    shuffled = outputs(loaded, split, lambda batch: permute_tokens(batch, g))
    for before, (batch, logits, perm) in zip(plain, shuffled):
        preds = logits.argmax(-1)
        if preds.dim() == 2:  # a tagger: (B, N)
            real = batch["label"] != -100
            moved = before.gather(1, perm)
            same += int((moved == preds)[real].sum())
            seen += int(real.sum())
        else:  # a classifier: (B,)
            same += int((before == preds).sum())
            seen += preds.numel()
        p, target = loaded.task.metric_inputs(logits, batch)
        right += int((p == target).sum())
        scored += target.numel()
    return {"agree": same / seen, "acc": right / scored}
