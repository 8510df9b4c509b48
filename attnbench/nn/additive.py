"""Additive (Bahdanau) scoring, shared by the additive and multihead plugins:
score(q, k) = vᵀ tanh(q' + k') per head over already projected features.

Neither the (Nq, Nk, hidden) tanh tensor nor the (Nq, Nk) weights are ever kept whole: queries
go through in chunks, each chunk computes its scores, softmax and weights·values at once, and
in training the whole chunk is checkpointed (torch.utils.checkpoint), so backward recomputes
its scores instead of storing them. Peak memory is O(Nq·d + chunk · Nk · hidden): what a
chunk keeps for backward is its inputs (views of q, k, values) and its (C, hd) output.

Why checkpointing and not a hand-written autograd.Function: it gives the same O(N·d + chunk)
bound and exact gradients by construction (autograd differentiates the same ops again),
replays dropout's random state, and differentiates learned score biases and autocast for
free. Its backward holds about three tanh-sized buffers per chunk (the recomputed tanh, its
gradient, the gradient of the sum) where a fused backward would need one, so the chunk
budget per device below is sized for three; the memory traffic, which sets the time on a
GPU, is of the same order either way (both run the chunk's forward again in backward and
pass over the tanh tensor a handful of times).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from attnbench.nn.attention import masked_softmax, score_terms
from attnbench.nn.ctx import Ctx

# tanh buffer per chunk when chunk_size=0, per device type.
# CPU: at least 36 MiB, above glibc's largest dynamic mmap threshold (32 MiB), so each chunk's
# buffer is mapped and handed back whole. 16 MiB chunks fragmented the heap: `attnbench bench
# attention --variants additive --sizes 4096 --heads 1 --d-model 64 --repeats 1 --warmup 0
# --min-time 0` reached 4.2 GB resident for 121 MiB of live tensors; with these the default
# run peaks at 0.70 GB, its passes slower (29.8 s vs 21.0 s, on a loaded machine).
# CUDA: the caching allocator has no such trap; larger chunks mean fewer kernel launches. A
# pass holds about 3x the budget at once (measured on the CPU at B 2, h 8, d 512, bf16
# autocast: 196 MiB above the O(N·d) part for a 64 MiB budget), and the O(N·d) part grows
# like dot's, so at N 16384 128 MiB gives about 0.4 + 0.3 GiB vs dot's ~0.36 GiB (< 2x;
# target 4x), with 4 query rows per chunk (16384 keys x 16 heads x 64 features in bf16).
CHUNK_BYTES = {"cpu": 36 << 20, "cuda": 128 << 20}
DEFAULT_CHUNK_BYTES = 36 << 20  # other devices


def _rows(t: Tensor | None, rows: slice) -> Tensor | None:
    """The query rows of a mask/bias broadcastable to (B, h, Nq, Nk)."""
    return t if t is None or t.size(-2) == 1 else t[..., rows, :]


def _scores(qh: Tensor, kh: Tensor, v: Tensor) -> Tensor:
    """qh (B, h, C, e), kh (B, h, Nk, e), v (h, e) -> (B, h, C, Nk), in the features' dtype"""
    t = (qh.unsqueeze(-2) + kh.unsqueeze(-3)).tanh_()  # (B, h, C, Nk, e); in place: 1 copy
    return (t @ v.to(t.dtype)[:, None, :, None]).squeeze(-1)  # batched mat-vec over e


def _chunk(
    qh: Tensor,
    kh: Tensor,
    v: Tensor,
    values: Tensor,
    mask: Tensor | None,
    bias: Tensor | None,
    dropout_p: float,
) -> tuple[Tensor, Tensor]:
    """One block of queries: qh (B, h, C, e) -> (y (B, h, C, hd), weights (B, h, C, Nk))"""
    w = masked_softmax(_scores(qh, kh, v), mask, bias).to(values.dtype)
    return F.dropout(w, dropout_p) @ values, w


def chunk_rows(qh: Tensor, nk: int, chunk_size: int) -> int:
    """Queries per chunk: chunk_size, or as many as fit the device's tanh budget."""
    if chunk_size:
        return chunk_size
    budget = CHUNK_BYTES.get(qh.device.type, DEFAULT_CHUNK_BYTES)
    b, h, _, e = qh.shape
    row_bytes = max(1, b * h * nk * e * qh.element_size())  # one query's tanh buffer
    return -(-budget // row_bytes)


class AdditiveScore(nn.Module):
    """Per-head Bahdanau scoring over already projected features; chunked over queries."""

    def __init__(self, heads: int, hidden: int, chunk_size: int = 0):
        super().__init__()
        self.v = nn.Parameter(torch.empty(heads, hidden).uniform_(-1, 1) / math.sqrt(hidden))
        self.chunk_size = chunk_size

    def forward(
        self,
        qh: Tensor,
        kh: Tensor,
        values: Tensor,
        ctx: Ctx,
        *,
        need_weights: bool = False,
        dropout_p: float = 0.0,
    ) -> tuple[Tensor, Tensor | None]:
        """qh (B, h, Nq, e), kh (B, h, Nk, e), values (B, h, Nk, hd) -> (B, h, Nq, hd), weights"""
        nq, nk = qh.size(-2), kh.size(-2)
        mask, bias = score_terms(ctx, nq, nk, qh.size(1), qh.device, qh.dtype)
        chunk = chunk_rows(qh, nk, self.chunk_size)
        recompute = torch.is_grad_enabled() and any(
            t is not None and t.requires_grad for t in (qh, kh, values, self.v, bias)
        )
        ys, ws = [], []
        for start in range(0, nq, chunk):  # a loop over blocks of queries, not tokens
            rows = slice(start, start + chunk)
            args = (qh[:, :, rows], kh, self.v, values, _rows(mask, rows), _rows(bias, rows))
            if recompute:  # keep no (C, Nk) activations: the chunk is recomputed in backward
                y, w = checkpoint(_chunk, *args, dropout_p, use_reentrant=False)
            else:
                y, w = _chunk(*args, dropout_p)
            ys.append(y)  # (B, h, C, hd)
            if need_weights:
                ws.append(w)
            del w  # a checkpointed chunk's weights are not saved: dropping them frees them
        return torch.cat(ys, dim=-2), (torch.cat(ws, dim=-2) if need_weights else None)
