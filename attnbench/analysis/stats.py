"""Numbers about attention weights: per-head mean attention distance and entropy, and
attention rollout.

Mean attention distance (Dosovitskiy et al. 2021, Fig. 7): for query i,
sum_j a_ij * ||pos_i - pos_j||, averaged over queries and examples; in tokens on sequences,
in patch-grid units on images. Attention entropy: -sum_j a_ij log a_ij (nats), averaged the
same way. Attention rollout (Abnar & Zuidema 2020): the product over layers of
0.5 * (mean over heads of A) + 0.5 * I, rows renormalised.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from attnbench.analysis.capture import Record


def rollout(layers: list[Tensor]) -> Tensor:
    """Attention rollout over layers (first to last) of weights (heads, N, N) -> (N, N):
    row i says how much token i's final state draws on each input token, through the
    residual connections (the identity) as well as the attention."""
    if not layers:
        raise ValueError("rollout needs at least one layer of attention weights")
    n = layers[0].size(-1)
    eye = torch.eye(n, dtype=torch.float64)
    result = eye
    for weights in layers:
        a = 0.5 * weights.double().mean(0) + 0.5 * eye  # (N, N)
        a = a / a.sum(-1, keepdim=True).clamp(min=1e-12)
        result = a @ result
    return result.float()


def token_positions(ctx, batch: int, n: int) -> Tensor:
    """(B, N, D) float positions of the tokens a self-attention saw: ctx.positions (1-D
    or 2-D grid), or 0..N-1 when the batch gives none."""
    positions = getattr(ctx, "positions", None)
    if positions is None:
        positions = torch.arange(n)[None]
    positions = positions.detach().cpu().float()
    if positions.dim() == 2:
        positions = positions[..., None]  # (B|1, N, 1)
    return positions.expand(batch, -1, -1)


def distance_and_entropy(
    weights: Tensor, positions: Tensor | None, valid: Tensor | None = None
) -> tuple[Tensor, Tensor, Tensor]:
    """Per-head sums over queries of the attention distance and entropy, and the number of
    queries summed: (heads,), (heads,), scalar.

    weights (B, h, N, N) self-attention; positions (B, N, D), or None to skip the distance
    (its sums are then NaN); valid (B, N) True for real tokens (padding excluded). Tokens
    without a place (CLS: a negative grid position) are neither queries nor keys of the
    distance, which is taken over the located keys' share of each row. Rows with no
    allowed key (all zero) are skipped."""
    w = weights.float()
    b, h, n, _ = w.shape
    real = torch.ones(b, n, dtype=torch.bool) if valid is None else valid.cpu().bool()
    if positions is not None:
        located = (positions >= 0).all(-1)  # (B, N)
        real = real & located
    rows = real[:, None, :] & (w.sum(-1) > 0)  # (B, h, N): the queries that count
    entropy = -(w * torch.log(w.clamp(min=1e-30))).sum(-1)  # (B, h, N)
    ent_sum = (entropy * rows).double().sum((0, 2))
    count = rows[:, 0].sum().double()  # the same queries count for every head
    if positions is None:
        return torch.full((h,), float("nan"), dtype=torch.float64), ent_sum, count
    dist = torch.cdist(positions.float(), positions.float())  # (B, N, N)
    keys = w * located[:, None, None, :]  # (B, h, N, N): weight on located keys only
    mass = keys.sum(-1)  # (B, h, N)
    mean_dist = (keys * dist[:, None]).sum(-1) / mass.clamp(min=1e-12)  # (B, h, N)
    return (mean_dist * rows).double().sum((0, 2)), ent_sum, count


# elements of (B, h, N, N) handled at once: a long sequence's batch would take gigabytes
_CHUNK_ELEMENTS = 1 << 24


@dataclass
class HeadStats:
    """Running per-(module, head) sums of attention distance and entropy over batches.
    Cross-attention gets its entropy only: there is no distance between two sequences."""

    measure_distance: bool = True  # False on graphs: node order is no distance
    modules: list[str] = field(default_factory=list)  # in the order they first ran
    cross: dict[str, bool] = field(default_factory=dict)
    # (B, T) real decoder queries of the current batch (seq2seq: the decoder's ctx has no
    # padding mask), set by the caller per batch; None counts every decoder query
    decoder_queries: Tensor | None = None
    sums: dict[str, list[Tensor]] = field(default_factory=dict)  # path -> [dist, ent, n]

    def add(self, record: Record) -> None:
        w = record.weights  # (B, h, Nq, Nk)
        b, _, nq, nk = w.shape
        ctx = record.ctx
        decoder = record.cross or bool(getattr(ctx, "causal", False))
        if not record.cross and nq != nk:  # a decoding step: the teacher-forced pass covers it
            return
        valid = getattr(ctx, "key_padding_mask", None)
        if decoder:
            mask = self.decoder_queries
            valid = mask if mask is not None and tuple(mask.shape) == (b, nq) else None
        measured = self.measure_distance and not record.cross
        positions = token_positions(ctx, b, nk) if measured else None
        step = max(1, _CHUNK_ELEMENTS // w[0].numel())
        parts = [
            distance_and_entropy(
                w[i : i + step],
                None if positions is None else positions[i : i + step],
                None if valid is None else valid[i : i + step],
            )
            for i in range(0, b, step)
        ]
        sums = [sum(p[k] for p in parts) for k in range(3)]
        if record.path not in self.sums:
            self.modules.append(record.path)
            self.cross[record.path] = record.cross
            self.sums[record.path] = sums
        else:
            self.sums[record.path] = [x + y for x, y in zip(self.sums[record.path], sums)]

    def rows(self) -> list[dict]:
        """One row per (layer, head): depth index, module path, self or cross, head, mean
        distance (None when not measured), mean entropy, queries averaged over."""
        out = []
        for layer, path in enumerate(self.modules):
            dist, ent, n = self.sums[path]
            count = max(float(n), 1.0)
            for head in range(len(ent)):
                measured = self.measure_distance and not self.cross[path]
                out.append(
                    {
                        "layer": layer,
                        "module": path,
                        "attention": "cross" if self.cross[path] else "self",
                        "head": head,
                        "mean_distance": float(dist[head]) / count if measured else None,
                        "entropy": float(ent[head]) / count,
                        "queries": int(n),
                    }
                )
        return out
