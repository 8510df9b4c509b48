"""Additive (Bahdanau) attention: score(q, k) = vᵀ tanh(W_q q + W_k k), one score per head.

Neither the (Nq, Nk, hidden) tanh tensor nor the (Nq, Nk) weights are kept whole: queries go
through in chunks, and in training each chunk (scores, softmax, weights·values) is recomputed
in backward (activation checkpointing), so the peak memory is O(Nq · d + chunk · Nk · hidden)
on every device (attnbench.nn.additive).
"""

from __future__ import annotations

from typing import Annotated

from torch import Tensor, nn

from attnbench import register
from attnbench.nn.additive import AdditiveScore
from attnbench.nn.attention import Attention, decoding_kv, merge_heads, rotate, split_heads
from attnbench.nn.ctx import Ctx
from attnbench.params import Range
from attnbench.registry import ConfigError


@register("attention", "additive")
class AdditiveAttention(Attention):
    """Additive attention (Bahdanau et al. 2015); query and key sizes may differ."""

    supports_causal = True
    supports_cross = True
    supports_padding = True
    supports_relative_posenc = True
    supports_kv_cache = True

    def __init__(
        self,
        d_model: int,
        heads: int,
        hidden: int | None = None,
        query_dim: Annotated[int | None, Range(min=1)] = None,
        key_dim: Annotated[int | None, Range(min=1)] = None,
        dropout: float = 0.0,
        chunk_size: int = 0,
    ):
        super().__init__(d_model, heads)
        for name, value in (
            ("hidden", hidden),
            ("query_dim", query_dim),
            ("key_dim", key_dim),
            ("chunk_size", chunk_size),
        ):
            if value is not None and value < (0 if name == "chunk_size" else 1):
                raise ConfigError(
                    f"attention.{name}={value} must be positive; leave it unset for the default"
                )
        self.hidden = hidden or self.head_dim  # per-head size of the tanh layer
        query_dim, key_dim = query_dim or d_model, key_dim or d_model
        self.q_proj = nn.Linear(query_dim, heads * self.hidden, bias=False)
        self.k_proj = nn.Linear(key_dim, heads * self.hidden)  # one bias serves both sides
        self.v_proj = nn.Linear(key_dim, d_model)
        self.out = nn.Linear(d_model, d_model)
        self.score = AdditiveScore(heads, self.hidden, chunk_size)
        self.dropout = dropout

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
        qh = split_heads(self.q_proj(query), self.heads)  # (B, h, Nq, e)
        kh, v = decoding_kv(
            ctx,
            lambda: (
                split_heads(self.k_proj(key), self.heads),  # e
                split_heads(self.v_proj(value), self.heads),
            ),
        )  # hd
        qh, kh = rotate(qh, kh, ctx)  # RoPE: position-aware features inside the tanh
        y, weights = self.score(
            qh,
            kh,
            v,
            ctx,
            need_weights=need_weights,
            dropout_p=self.dropout if self.training else 0.0,
        )
        return self.out(merge_heads(y)), weights
