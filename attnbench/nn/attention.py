"""The attention contract shared by every attention plugin, and its small helpers.

A variant serves only the uses it declares (fail closed): the capability flags below are
all False on the base class, so a plugin that says nothing about causal masks, padding,
cross-attention or relative positions is refused for them before training (the harness
calls :meth:`Attention.check_use`) and again at call time (a forward pre-hook), instead of
silently computing something else. :class:`ScoreAttention` declares them all and applies
masks, relative-position hooks, KV caching and the softmax itself: a new softmax variant
only writes its ``score(q, k)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnbench import registry
from attnbench.nn.ctx import Ctx
from attnbench.registry import ConfigError

# capability flag -> (the use it serves, in a refusal's words)
CAPABILITIES = {
    "supports_causal": "causal (decoder) attention",
    "supports_cross": "cross-attention",
    "supports_padding": "padded batches (a key padding mask)",
    "supports_relative_posenc": "a relative positional encoding",
    "supports_kv_cache": "a decoding KV cache",
}


class Attention(nn.Module):
    """Base class of attention plugins.

    Called as ``attn(query, key, value, *, ctx=None, need_weights=False)`` with shapes
    (B, Nq, d), (B, Nk, d), (B, Nk, d) -> (out (B, Nq, d), weights (B, heads, Nq, Nk) or
    None). Declare what the variant can do with the class attributes below; everything
    left False is refused.
    """

    supports_causal = False  # honours ctx.causal: query i sees keys <= i only
    supports_cross = False  # keys/values may come from another sequence (Nq != Nk)
    supports_padding = False  # honours ctx.key_padding_mask: padded keys get weight 0
    supports_relative_posenc = False  # calls ctx.posenc's rotate / score_bias hooks
    supports_kv_cache = False  # keeps projected keys/values in ctx.kv_cache when decoding
    needs_graph = False  # attends along ctx.edges; refused on tasks that give none
    order_aware = False  # output depends on token order even without positions (windows)

    def __init__(self, d_model: int, heads: int):
        super().__init__()
        if d_model % heads:
            raise ConfigError(
                f"d_model={d_model} is not divisible by heads={heads}; "
                "pick heads that divide d_model"
            )
        self.d_model, self.heads, self.head_dim = d_model, heads, d_model // heads
        self.register_forward_pre_hook(_refuse_undeclared_use, with_kwargs=True)

    @classmethod
    def capabilities(cls) -> dict[str, bool]:
        return {flag: bool(getattr(cls, flag)) for flag in (*CAPABILITIES, "needs_graph")}

    @classmethod
    def check_use(
        cls,
        *,
        causal: bool = False,
        cross: bool = False,
        padding: bool = False,
        graph: bool = False,
        relative_posenc: bool = False,
        kv_cache: bool = False,
    ) -> None:
        """Raise a one-line error when this variant cannot serve the requested use."""
        name = getattr(cls, "plugin_name", cls.__name__)
        wanted = {
            "supports_causal": causal,
            "supports_cross": cross,
            "supports_padding": padding,
            "supports_relative_posenc": relative_posenc,
            "supports_kv_cache": kv_cache,
        }
        for flag, use in wanted.items():
            if use and not getattr(cls, flag):
                raise ConfigError(
                    f"attention {name!r} does not declare {flag}, so it cannot serve "
                    f"{CAPABILITIES[flag]}; attentions that can: {_able(flag)}"
                )
        if cls.needs_graph and not graph:
            tasks = ", ".join(p.name for p in registry.plugins("task") if p.cls.gives_edges)
            raise ConfigError(
                f"attention {name!r} needs graph edges, and this task gives none; "
                f"tasks that give edges: {tasks}"
            )


def _able(flag: str) -> str:
    return ", ".join(p.name for p in registry.plugins("attention") if getattr(p.cls, flag))


def _refuse_undeclared_use(module: Attention, args: tuple, kwargs: dict[str, Any]) -> None:
    """Call-time guard (direct use outside the harness): a ctx asking for an undeclared
    capability raises instead of being silently ignored."""
    ctx = kwargs.get("ctx")
    if ctx is None:
        return
    posenc = ctx.posenc
    type(module).check_use(
        causal=ctx.causal,
        padding=ctx.key_padding_mask is not None,
        graph=ctx.edges is not None,
        relative_posenc=posenc is not None and getattr(posenc, "relative", False),
        kv_cache=ctx.kv_cache is not None,
    )


# ----------------------------------------------------------------------------- helpers

HALF = (torch.float16, torch.bfloat16)


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype to normalise or accumulate in: float32 for half precision (softmax sums,
    scattered sums), the dtype itself otherwise (no copy on the float32 path)."""
    return torch.float32 if dtype in HALF else dtype


def decoding_kv(ctx: Ctx, project: Callable[[], tuple[Tensor, Tensor]]) -> tuple[Tensor, Tensor]:
    """Keys/values to attend, (B, h, Nk, ·): ``project()`` them, except while decoding with
    ctx.kv_cache, where a static (cross-attention) cache is projected once and reused and a
    self-attention cache gets the new positions appended."""
    cache = ctx.kv_cache
    if cache is None:
        return project()
    if cache.get("static") and "k" in cache:
        return cache["k"], cache["v"]
    k, v = project()
    if not cache.get("static") and "k" in cache:
        k, v = torch.cat([cache["k"], k], dim=-2), torch.cat([cache["v"], v], dim=-2)
    cache["k"], cache["v"] = k, v
    return k, v


def split_heads(x: Tensor, heads: int) -> Tensor:
    """(B, N, d) -> (B, heads, N, d/heads)"""
    b, n, d = x.shape
    return x.view(b, n, heads, d // heads).transpose(1, 2)


def merge_heads(x: Tensor) -> Tensor:
    """(B, heads, N, hd) -> (B, N, heads*hd)"""
    b, h, n, hd = x.shape
    return x.transpose(1, 2).reshape(b, n, h * hd)


def rotate(q: Tensor, k: Tensor, ctx: Ctx) -> tuple[Tensor, Tensor]:
    """Apply a relative positional encoding's q/k hook (RoPE), if ctx carries one."""
    return ctx.posenc.rotate(q, k, ctx) if ctx.posenc is not None else (q, k)


def dense_mask(ctx: Ctx | None, nq: int, nk: int, device: torch.device) -> Tensor | None:
    """Boolean (B|1, 1, Nq, Nk) mask from key padding and causality; None if unrestricted."""
    if ctx is None:
        return None
    mask = None
    if ctx.key_padding_mask is not None:
        mask = ctx.key_padding_mask[:, None, None, :]  # (B, 1, 1, Nk)
    if ctx.causal:
        # queries are the last nq positions of the keys (nq < nk when decoding step-wise)
        causal = torch.ones(nq, nk, dtype=torch.bool, device=device).tril(nk - nq)
        mask = causal if mask is None else mask & causal
    return mask


def score_terms(
    ctx: Ctx, nq: int, nk: int, heads: int, device: torch.device, dtype: torch.dtype
) -> tuple[Tensor | None, Tensor | None]:
    """(allowed (B|1, 1, Nq, Nk) bool or None, bias broadcastable to (B, h, Nq, Nk) or None):
    everything ctx restricts or adds to the scores, in one place."""
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
    Half-precision scores are normalised in float32 and returned in their own dtype,
    whatever the bias's dtype (CUDA autocast may hand float32 biases to bfloat16 scores).
    """
    dtype = scores.dtype
    scores = scores.to(compute_dtype(dtype))
    if bias is not None:
        scores = scores + bias
    if mask is None:
        return scores.softmax(dim=-1).to(dtype)
    weights = scores.masked_fill(~mask, float("-inf")).softmax(dim=-1)
    return weights.masked_fill(~mask, 0.0).to(dtype)


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
        weights = masked_softmax(scores, mask, bias).to(v.dtype)
        return F.dropout(weights, dropout_p) @ v, weights
    if ctx.causal and nq == nk and bias is None and ctx.key_padding_mask is None:
        # plain causal self-attention: let the kernel skip the masked half
        return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=True), None
    if bias is not None:
        mask = bias if mask is None else bias.masked_fill(~mask, float("-inf"))
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p), None


# ----------------------------------------------------------------------------- score variants


class ScoreAttention(Attention):
    """Softmax attention with a pluggable score: subclasses write ``score(q, k)`` only.

    The base projects q, k, v (separate linear maps, split into heads), applies a relative
    positional encoding's hooks, the padding and causal masks, keeps a decoding KV cache,
    takes the softmax (exactly 0 on masked keys), applies dropout and the output
    projection. So it declares every capability; a subclass cannot forget one.
    """

    supports_causal = True
    supports_cross = True
    supports_padding = True
    supports_relative_posenc = True
    supports_kv_cache = True

    def __init__(self, d_model: int, heads: int, dropout: float = 0.0, bias: bool = True):
        super().__init__(d_model, heads)
        self.q_proj = nn.Linear(d_model, d_model, bias=bias)
        self.k_proj = nn.Linear(d_model, d_model, bias=bias)
        self.v_proj = nn.Linear(d_model, d_model, bias=bias)
        self.out = nn.Linear(d_model, d_model, bias=bias)
        self.dropout = dropout

    def score(self, q: Tensor, k: Tensor) -> Tensor:
        """q (B, h, Nq, hd), k (B, h, Nk, hd) -> scores (B, h, Nq, Nk), before the softmax."""
        raise NotImplementedError(f"{type(self).__name__} must implement score(q, k)")

    def attend(
        self, q: Tensor, k: Tensor, v: Tensor, ctx: Ctx, need_weights: bool, dropout_p: float
    ) -> tuple[Tensor, Tensor | None]:
        """Split-head attention (B, h, Nq, hd) -> (y, weights); override for a fused kernel."""
        mask, bias = score_terms(ctx, q.size(-2), k.size(-2), q.size(1), q.device, q.dtype)
        # a score may come out in float32 (a sum under CUDA autocast): weights in v's dtype
        weights = masked_softmax(self.score(q, k), mask, bias).to(v.dtype)
        return F.dropout(weights, dropout_p) @ v, weights if need_weights else None

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
                split_heads(self.k_proj(key), self.heads),  # (B, h, Nk, hd)
                split_heads(self.v_proj(value), self.heads),
            ),
        )
        q, k = rotate(q, k, ctx)
        y, weights = self.attend(q, k, v, ctx, need_weights, self.dropout if self.training else 0.0)
        return self.out(merge_heads(y)), weights
