"""Additive (Bahdanau) scoring, shared by the additive and multihead plugins:
score(q, k) = vᵀ tanh(q' + k') per head over already projected features.

The (Nq, Nk, hidden) tanh tensor is never built whole: queries go through in chunks, and in
training each chunk's scores are recomputed in backward (activation checkpointing), so the
peak memory is O(chunk · Nk · hidden) plus the O(Nq · Nk) weights, not O(Nq · Nk · hidden).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from attnbench.nn.attention import masked_softmax, score_terms
from attnbench.nn.ctx import Ctx

# tanh buffer per chunk when chunk_size=0: at least 36 MiB, above glibc's largest dynamic
# mmap threshold (32 MiB), so each chunk's buffer is mapped and handed back whole. 16 MiB
# chunks fragmented the heap: `attnbench bench attention --variants additive --sizes 4096
# --heads 1 --d-model 64 --repeats 1 --warmup 0 --min-time 0` reached 4.2 GB resident for
# 121 MiB of live tensors; with these the default run peaks at 0.70 GB, its passes slower
# (29.8 s vs 21.0 s, on a loaded machine).
CHUNK_BYTES = 36 << 20


def _rows(t: Tensor | None, rows: slice) -> Tensor | None:
    """The query rows of a mask/bias broadcastable to (B, h, Nq, Nk)."""
    return t if t is None or t.size(-2) == 1 else t[..., rows, :]


def _scores(qh: Tensor, kh: Tensor, v: Tensor) -> Tensor:
    """qh (B, h, C, e), kh (B, h, Nk, e), v (h, e) -> (B, h, C, Nk), in the features' dtype"""
    t = (qh.unsqueeze(-2) + kh.unsqueeze(-3)).tanh_()  # (B, h, C, Nk, e); in place: 1 copy
    return (t @ v.to(t.dtype)[:, None, :, None]).squeeze(-1)  # batched mat-vec over e


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
        b, h, nq, e = qh.shape
        nk = kh.size(-2)
        mask, bias = score_terms(ctx, nq, nk, h, qh.device, qh.dtype)
        row_bytes = max(1, b * h * nk * e * qh.element_size())  # one query's tanh buffer
        chunk = self.chunk_size or -(-CHUNK_BYTES // row_bytes)
        recompute = torch.is_grad_enabled() and (
            qh.requires_grad or kh.requires_grad or self.v.requires_grad
        )
        ys, ws = [], []
        for start in range(0, nq, chunk):  # a loop over blocks of queries, not tokens
            rows = slice(start, start + chunk)
            if recompute:  # keep no (C, Nk, e) activations: recompute them in backward
                s = checkpoint(_scores, qh[:, :, rows], kh, self.v, use_reentrant=False)
            else:
                s = _scores(qh[:, :, rows], kh, self.v)
            w = masked_softmax(s, _rows(mask, rows), _rows(bias, rows)).to(values.dtype)
            ys.append(F.dropout(w, dropout_p) @ values)  # (B, h, C, hd)
            if need_weights:
                ws.append(w)
        return torch.cat(ys, dim=-2), (torch.cat(ws, dim=-2) if need_weights else None)
