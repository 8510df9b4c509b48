"""Scaled dot-product attention, softmax(q·kᵀ/√d)·v, through F.scaled_dot_product_attention."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnbench import register
from attnbench.nn.attention import Attention, dense_mask, merge_heads, split_heads
from attnbench.nn.ctx import Ctx


@register("attention", "dot")
class DotAttention(Attention):
    """Scaled dot-product attention (Vaswani et al. 2017), fused SDPA kernel."""

    def __init__(self, d_model: int, heads: int, dropout: float = 0.0, bias: bool = True):
        super().__init__(d_model, heads)
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=bias)  # fused q, k, v projections
        self.out = nn.Linear(d_model, d_model, bias=bias)
        self.dropout = dropout

    def _project(self, query: Tensor, key: Tensor, value: Tensor):
        if query is key and key is value:  # self-attention: one matmul
            return self.qkv(query).chunk(3, dim=-1)
        w, b = self.qkv.weight.chunk(3), (self.qkv.bias.chunk(3) if self.qkv.bias is not None
                                         else (None, None, None))
        return F.linear(query, w[0], b[0]), F.linear(key, w[1], b[1]), F.linear(value, w[2], b[2])

    def forward(self, query: Tensor, key: Tensor, value: Tensor, *, ctx: Ctx | None = None,
                need_weights: bool = False) -> tuple[Tensor, Tensor | None]:
        ctx = ctx or Ctx()
        q, k, v = self._project(query, key, value)
        q, k, v = (split_heads(t, self.heads) for t in (q, k, v))  # (B, h, N, hd)
        if ctx.posenc is not None:
            q, k = ctx.posenc.rotate(q, k, ctx)
        nq, nk = q.size(-2), k.size(-2)
        mask = dense_mask(ctx, nq, nk, q.device)  # (B|1, 1, Nq, Nk) bool or None
        bias = ctx.posenc.score_bias(nq, nk, ctx) if ctx.posenc is not None else None
        if bias is not None:
            bias = bias.to(q.dtype)
            mask = bias if mask is None else bias.masked_fill(~mask, float("-inf"))
        p = self.dropout if self.training else 0.0
        if need_weights:  # eager path: the only one that materialises the weights
            scores = (q @ k.transpose(-2, -1)) / math.sqrt(self.head_dim)  # (B, h, Nq, Nk)
            if mask is not None:
                scores = (scores + mask if mask.dtype != torch.bool
                          else scores.masked_fill(~mask, float("-inf")))
            weights = scores.softmax(dim=-1)
            y = F.dropout(weights, p) @ v
        else:
            is_causal = ctx.causal and mask is None
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=None if is_causal else mask,
                                               dropout_p=p, is_causal=is_causal)
            weights = None
        return self.out(merge_heads(y)), weights
