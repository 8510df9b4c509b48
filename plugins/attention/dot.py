"""Scaled dot-product attention, softmax(q·kᵀ/√d)·v, through F.scaled_dot_product_attention."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from attnbench import register
from attnbench.nn.attention import (
    Attention,
    decoding_kv,
    merge_heads,
    rotate,
    sdpa,
    split_heads,
)
from attnbench.nn.ctx import Ctx


@register("attention", "dot")
class DotAttention(Attention):
    """Scaled dot-product attention (Vaswani et al. 2017), fused SDPA kernel."""

    supports_causal = True
    supports_cross = True
    supports_padding = True
    supports_relative_posenc = True
    supports_kv_cache = True

    def __init__(self, d_model: int, heads: int, dropout: float = 0.0, bias: bool = True):
        super().__init__(d_model, heads)
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=bias)  # fused q, k, v projections
        self.out = nn.Linear(d_model, d_model, bias=bias)
        self.dropout = dropout

    def _project(self, query: Tensor, key: Tensor, value: Tensor, ctx: Ctx):
        """-> q (B, h, Nq, hd), k, v (B, h, Nk, hd), through ctx.kv_cache when decoding."""
        if query is key and key is value:  # self-attention: one matmul
            q, k, v = (split_heads(t, self.heads) for t in self.qkv(query).chunk(3, dim=-1))
            return q, *decoding_kv(ctx, lambda: (k, v))
        w = self.qkv.weight.chunk(3)
        b = self.qkv.bias.chunk(3) if self.qkv.bias is not None else (None, None, None)
        q = split_heads(F.linear(query, w[0], b[0]), self.heads)
        return q, *decoding_kv(
            ctx,
            lambda: (
                split_heads(F.linear(key, w[1], b[1]), self.heads),
                split_heads(F.linear(value, w[2], b[2]), self.heads),
            ),
        )

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
        q, k, v = self._project(query, key, value, ctx)  # (B, h, N, hd)
        q, k = rotate(q, k, ctx)
        p = self.dropout if self.training else 0.0
        y, weights = sdpa(q, k, v, ctx, need_weights=need_weights, dropout_p=p)
        return self.out(merge_heads(y)), weights
