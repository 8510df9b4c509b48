"""Multi-head attention with a selectable per-head score (dot or additive).

Separate q/k/v projections split into h heads, one score function per head, an output
projection: with score=dot it computes exactly what torch.nn.MultiheadAttention does.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor, nn

from attnbench import register
from attnbench.nn.additive import AdditiveScore
from attnbench.nn.attention import Attention, decoding_kv, merge_heads, rotate, sdpa, split_heads
from attnbench.nn.ctx import Ctx
from attnbench.registry import ConfigError

SCORES = ("dot", "additive")


@register("attention", "multihead")
class MultiHeadAttention(Attention):
    """Multi-head attention (Vaswani et al. 2017); attention.score=dot|additive per head.

    hidden (tanh size per head, default head_dim) and chunk_size (queries per block, 0 =
    automatic) only matter for score=additive.
    """

    supports_causal = True
    supports_cross = True
    supports_padding = True
    supports_relative_posenc = True
    supports_kv_cache = True

    def __init__(
        self,
        d_model: int,
        heads: int,
        score: Literal["dot", "additive"] = "dot",
        hidden: int | None = None,
        dropout: float = 0.0,
        bias: bool = True,
        chunk_size: int = 0,
    ):
        super().__init__(d_model, heads)
        if score not in SCORES:
            raise ConfigError(f"attention.score={score!r} is not one of {', '.join(SCORES)}")
        self.score_name, self.dropout = score, dropout
        self.q_proj = nn.Linear(d_model, d_model, bias=bias)
        self.k_proj = nn.Linear(d_model, d_model, bias=bias)
        self.v_proj = nn.Linear(d_model, d_model, bias=bias)
        self.out = nn.Linear(d_model, d_model, bias=bias)
        if score == "additive":
            # per head: W_q, W_k (hd -> e) and a bias, then AdditiveScore's v (e)
            e = hidden or self.head_dim
            bound = 1 / math.sqrt(self.head_dim)
            self.wq = nn.Parameter(torch.empty(heads, self.head_dim, e).uniform_(-bound, bound))
            self.wk = nn.Parameter(torch.empty(heads, self.head_dim, e).uniform_(-bound, bound))
            self.wb = nn.Parameter(torch.zeros(heads, 1, e))
            self.additive = AdditiveScore(heads, e, chunk_size)

    def forward(
        self,
        query: Tensor,
        key: Tensor,
        value: Tensor,
        *,
        ctx: Ctx | None = None,
        need_weights: bool = False,
    ) -> tuple[Tensor, Tensor | None]:
        ctx = ctx or Ctx()
        q = split_heads(self.q_proj(query), self.heads)  # (B, h, Nq, hd)
        k, v = decoding_kv(
            ctx,
            lambda: (
                split_heads(self.k_proj(key), self.heads),
                split_heads(self.v_proj(value), self.heads),
            ),
        )
        q, k = rotate(q, k, ctx)
        p = self.dropout if self.training else 0.0
        if self.score_name == "dot":
            y, weights = sdpa(q, k, v, ctx, need_weights=need_weights, dropout_p=p)
        else:
            qh = q @ self.wq  # (B, h, Nq, e): each head its own W_q
            kh = k @ self.wk  # (B, h, Nk, e)
            kh = kh + self.wb.to(kh.dtype)  # under autocast a float32 bias would widen kh
            y, weights = self.additive(qh, kh, v, ctx, need_weights=need_weights, dropout_p=p)
        return self.out(merge_heads(y)), weights
