"""Synthetic long-range tasks of configurable length, to compare RNNs with full and
truncated attention as sequences grow.

``task.dataset=adding`` (Hochreiter & Schmidhuber 1997): a sequence of ``length`` pairs
(value ~ U(0, 1), marker in {0, 1}); exactly two markers, one in each half, so the two
values to add are on average length/2 apart. The sum s in [0, 2] is classified into
``bins`` classes of equal probability (quantiles of the triangular density of the sum of
two uniforms), so chance accuracy is 1/bins and acc / macro f1 apply as for any
classification task.

``task.dataset=listops`` (Nangia & Bowman 2018; LRA): nested prefix expressions such as
``[MAX 2 9 [MIN 4 7 ] 0 ]`` over digits with MAX, MIN, MED (median, rounded down) and SM
(sum mod 10); the label is the value 0..9. Each expression is grown up to a random length
in [length/2, length] tokens; batches are padded (pad id 0).
"""

from __future__ import annotations

import random

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from attnbench import register
from attnbench.data.batching import BucketBatchSampler, ShuffledBatchSampler, loader_options
from attnbench.data.images import BatchDataset
from attnbench.data.text import DataError, Vocab
from attnbench.nn.ctx import Ctx
from attnbench.nn.embed import TokenEmbedder
from attnbench.registry import ConfigError
from attnbench.task import ClassificationTask

DATASETS = ("adding", "listops")
POOLINGS = ("mean", "last")
SEEDS = {"train": 1, "val": 2, "test": 3}
OPS = ("[MAX", "[MIN", "[MED", "[SM")
CLOSE = "]"
DIGITS = tuple(str(i) for i in range(10))


# ----------------------------------------------------------------------------- adding


def sum_bin_edges(bins: int) -> Tensor:
    """Inner edges (bins-1,) splitting s = u1 + u2 (u ~ U(0,1)) into equal-mass bins:
    the inverse CDF of the triangular density on [0, 2]."""
    q = torch.arange(1, bins, dtype=torch.float64) / bins
    return torch.where(q <= 0.5, (2 * q).sqrt(), 2 - (2 * (1 - q)).sqrt()).float()


def adding_problem(n: int, length: int, bins: int, seed: int) -> tuple[Tensor, Tensor]:
    """(inputs (n, length, 2) float [value, marker], labels (n,) long bin of the sum)."""
    g = torch.Generator().manual_seed(seed)
    values = torch.rand(n, length, generator=g)
    half = length // 2
    first = torch.randint(0, half, (n,), generator=g)
    second = torch.randint(half, length, (n,), generator=g)
    markers = torch.zeros(n, length)
    rows = torch.arange(n)
    markers[rows, first] = 1.0
    markers[rows, second] = 1.0
    total = values[rows, first] + values[rows, second]  # (n,) in [0, 2]
    labels = torch.bucketize(total, sum_bin_edges(bins))
    return torch.stack([values, markers], dim=-1), labels


class PairEmbedder(nn.Module):
    """(value, marker) pairs (B, N, 2) -> Linear -> (B, N, d); no padding."""

    def __init__(self, d_model: int):
        super().__init__()
        self.proj = nn.Linear(2, d_model)

    def forward(self, batch: dict[str, Tensor]) -> tuple[Tensor, Ctx]:
        return self.proj(batch["inputs"]), Ctx()


# ----------------------------------------------------------------------------- listops


def _evaluate(node: list) -> int:
    op, args = node[0], [a if isinstance(a, int) else _evaluate(a) for a in node[1:]]
    if op == "[MAX":
        return max(args)
    if op == "[MIN":
        return min(args)
    if op == "[MED":  # as LRA's int(np.median(args))
        s = sorted(args)
        return (s[(len(s) - 1) // 2] + s[len(s) // 2]) // 2
    return sum(args) % 10


def _tokens(node: list, out: list[str]) -> list[str]:
    out.append(node[0])
    for a in node[1:]:
        if isinstance(a, int):
            out.append(DIGITS[a])
        else:
            _tokens(a, out)
    out.append(CLOSE)
    return out


def listops_expression(
    rng: random.Random, max_tokens: int, max_args: int = 5, max_depth: int = 10
) -> tuple[list[str], int]:
    """(tokens, value) of one expression of at most ``max_tokens`` (>= 4) tokens.

    Start from an operator over digits, then repeatedly replace a random digit (at depth
    <= max_depth) by a new operator over digits, until the token count reaches a target
    drawn from [max_tokens/2, max_tokens]."""

    def new(most: int) -> list:  # an operator over 2..most digits
        k = rng.randint(2, max(2, min(max_args, most)))
        return [rng.choice(OPS), *(rng.randrange(10) for _ in range(k))]

    target = rng.randint(max(max_tokens // 2, 4), max_tokens)
    root = new(target - 2)
    size = len(root) + 1  # + the closing bracket
    leaves = [(root, i, 2) for i in range(1, len(root))]  # (parent, index, depth below)
    while leaves and target - size >= 3:  # room for the smallest operator: +3 tokens
        k = rng.randrange(len(leaves))
        parent, i, depth = leaves[k]
        leaves[k] = leaves[-1]
        leaves.pop()
        if depth > max_depth:
            continue
        node = new(target - size - 1)
        parent[i] = node
        size += len(node)  # op + digits + close - the replaced digit
        leaves.extend((node, j, depth + 1) for j in range(1, len(node)))
    return _tokens(root, []), _evaluate(root)


def listops(n: int, length: int, seed: int, vocab: Vocab) -> tuple[Tensor, Tensor, Tensor]:
    """(tokens (n, length) long padded with 0, lengths (n,), labels (n,))."""
    rng = random.Random(seed)
    tokens = torch.zeros(n, length, dtype=torch.long)
    lengths, labels = torch.zeros(n, dtype=torch.long), torch.zeros(n, dtype=torch.long)
    for i in range(n):  # generated once in setup, never per batch
        toks, value = listops_expression(rng, length)
        ids = vocab.encode(toks)
        tokens[i, : len(ids)] = ids
        lengths[i], labels[i] = len(ids), value
    return tokens, lengths, labels


def trim_collate(batch: dict[str, Tensor]) -> dict[str, Tensor]:
    """Cut the pre-padded token rows to the longest sequence in the batch (one slice)."""
    if "lengths" in batch:
        batch["tokens"] = batch["tokens"][:, : int(batch["lengths"].max())]
    return batch


# ----------------------------------------------------------------------------- task


class SequenceHead(nn.Module):
    """Mean over real positions, or the last real position, -> class logits."""

    def __init__(self, d_model: int, classes: int, pooling: str):
        super().__init__()
        self.pooling = pooling
        self.proj = nn.Linear(d_model, classes)

    def forward(self, h: Tensor, ctx: Ctx) -> Tensor:
        mask = ctx.key_padding_mask  # (B, N) or None
        if self.pooling == "last":
            last = (
                h.new_full(h.shape[:1], h.size(1)) if mask is None else mask.sum(1)
            ).long() - 1  # (B,)
            pooled = h[torch.arange(h.size(0), device=h.device), last]
        elif mask is None:
            pooled = h.mean(1)
        else:
            keep = mask.unsqueeze(-1).to(h.dtype)  # (B, N, 1)
            pooled = (h * keep).sum(1) / keep.sum(1).clamp(min=1)
        return self.proj(pooled)


@register("task", "longrange")
class LongRange(ClassificationTask):
    """Synthetic long-range classification: task.dataset=adding or listops, task.length."""

    def __init__(
        self,
        data_dir: str,
        dataset: str = "adding",
        length: int = 128,
        bins: int = 10,
        train_size: int = 10000,
        eval_size: int = 1000,
        pooling: str = "mean",
        batch_size: int = 64,
        num_workers: int = 0,
    ):
        super().__init__(data_dir)
        if dataset not in DATASETS:
            raise DataError(f"task.dataset={dataset!r} is not one of {', '.join(DATASETS)}")
        if pooling not in POOLINGS:
            raise ConfigError(f"task.pooling={pooling!r} is not one of {', '.join(POOLINGS)}")
        min_len = 2 if dataset == "adding" else 4
        if length < min_len:
            raise ConfigError(
                f"task.length={length} is too short for {dataset}; use at least {min_len}"
            )
        if dataset == "adding" and bins < 2:
            raise ConfigError(f"task.bins={bins} must be at least 2")
        if min(train_size, eval_size) < 1:
            raise ConfigError("task.train_size and task.eval_size must be positive")
        self.dataset, self.length, self.bins, self.pooling = dataset, length, bins, pooling
        self.sizes = {"train": train_size, "val": eval_size, "test": eval_size}
        self.batch_size, self.num_workers = batch_size, num_workers
        self.classes = bins if dataset == "adding" else 10
        self.pads = dataset != "adding"  # ListOps sequences vary in length
        self.vocab = Vocab([*DIGITS, *OPS, CLOSE])
        self.splits: dict[str, BatchDataset] = {}

    def max_positions(self) -> int:
        return self.length

    def setup(self) -> None:
        for split, n in self.sizes.items():
            if self.dataset == "adding":
                x, y = adding_problem(n, self.length, self.bins, SEEDS[split])
                self.splits[split] = BatchDataset(inputs=x, label=y)
            else:
                tokens, lengths, y = listops(n, self.length, SEEDS[split], self.vocab)
                self.splits[split] = BatchDataset(tokens=tokens, lengths=lengths, label=y)

    def dataloader(self, split: str) -> DataLoader:
        ds, seed = self.splits[split], torch.initial_seed()
        if "lengths" in ds.tensors:  # listops: batch similar lengths to cut padding
            sampler = BucketBatchSampler(
                ds.tensors["lengths"], self.batch_size, shuffle=split == "train", seed=seed
            )
        else:
            sampler = ShuffledBatchSampler(len(ds), self.batch_size, split == "train", seed)
        return DataLoader(
            ds, batch_sampler=sampler, collate_fn=trim_collate, **loader_options(self.num_workers)
        )

    def build_embedder(self, d_model: int) -> nn.Module:
        if self.dataset == "adding":
            return PairEmbedder(d_model)
        return TokenEmbedder(len(self.vocab), d_model)

    def build_head(self, d_model: int) -> SequenceHead:
        return SequenceHead(d_model, self.classes, self.pooling)
