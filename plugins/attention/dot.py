"""Scaled dot-product attention, softmax(q·kᵀ/√d)·v, through F.scaled_dot_product_attention.

Also home of the small helpers the other softmax variants share: gathering the mask and the
relative-position score bias from ``ctx``, and the masked softmax of the eager paths.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnbench import register
from attnbench.nn.attention import Attention, decoding_kv, dense_mask, merge_heads, split_heads
from attnbench.nn.ctx import Ctx
from attnbench.registry import ConfigError


def score_terms(
    ctx: Ctx, nq: int, nk: int, heads: int, device: torch.device, dtype: torch.dtype
) -> tuple[Tensor | None, Tensor | None]:
    """(allowed (B|1, 1, Nq, Nk) bool or None, bias broadcastable to (B, h, Nq, Nk) or None)."""
    mask = dense_mask(ctx, nq, nk, device)
    bias = ctx.posenc.score_bias(nq, nk, ctx) if ctx.posenc is not None else None
    if bias is not None:
        if bias.dim() == 4 and bias.size(1) not in (1, heads):
            raise ConfigError(
                f"the positional encoding gives a score bias for {bias.size(1)} "
                f"heads but the attention has {heads}; build it with the backbone's "
                "head count (posenc(d_model=..., heads=...))"
            )
        bias = bias.to(dtype)
    return mask, bias


def masked_softmax(scores: Tensor, mask: Tensor | None, bias: Tensor | None) -> Tensor:
    """softmax over keys of scores + bias, exactly 0 on disallowed keys.

    A row with no allowed key gets all-zero weights (as SDPA returns 0 there), not NaN.
    """
    if bias is not None:
        scores = scores + bias
    if mask is None:
        return scores.softmax(dim=-1)
    weights = scores.masked_fill(~mask, float("-inf")).softmax(dim=-1)
    return weights.masked_fill(~mask, 0.0)


def sdpa(
    q: Tensor, k: Tensor, v: Tensor, ctx: Ctx, *, need_weights: bool = False, dropout_p: float = 0.0
) -> tuple[Tensor, Tensor | None]:
    """Softmax attention over split heads: q (B, h, Nq, hd), k/v (B, h, Nk, hd) -> y, weights.

    The fused SDPA kernel unless weights are asked for; the eager path computes the same.
    """
    nq, nk = q.size(-2), k.size(-2)
    mask, bias = score_terms(ctx, nq, nk, q.size(1), q.device, q.dtype)
    if need_weights:  # eager path: the only one that materialises the weights
        scores = (q @ k.transpose(-2, -1)) / math.sqrt(q.size(-1))  # (B, h, Nq, Nk)
        weights = masked_softmax(scores, mask, bias)
        return F.dropout(weights, dropout_p) @ v, weights
    if ctx.causal and nq == nk and bias is None and ctx.key_padding_mask is None:
        # plain causal self-attention: let the kernel skip the masked half
        return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=True), None
    if bias is not None:
        mask = bias if mask is None else bias.masked_fill(~mask, float("-inf"))
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p), None


@register("attention", "dot")
class DotAttention(Attention):
    """Scaled dot-product attention (Vaswani et al. 2017), fused SDPA kernel."""

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
        w, b = (
            self.qkv.weight.chunk(3),
            (self.qkv.bias.chunk(3) if self.qkv.bias is not None else (None, None, None)),
        )
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
        if ctx.posenc is not None:
            q, k = ctx.posenc.rotate(q, k, ctx)
        y, weights = sdpa(
            q,
            k,
            v,
            ctx,
            need_weights=need_weights,
            dropout_p=self.dropout if self.training else 0.0,
        )
        return self.out(merge_heads(y)), weights
