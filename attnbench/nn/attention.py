"""The attention contract shared by every attention plugin, and its small helpers."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from attnbench import registry
from attnbench.nn.ctx import Ctx
from attnbench.registry import ConfigError


class Attention(nn.Module):
    """Base class of attention plugins.

    Called as ``attn(query, key, value, *, ctx=None, need_weights=False)`` with shapes
    (B, Nq, d), (B, Nk, d), (B, Nk, d) -> (B, Nq, d), weights (B, heads, Nq, Nk) or None.
    The class attributes declare what the variant can do; the harness refuses a use it
    cannot serve (see :meth:`check_use`) instead of silently ignoring it.
    """

    supports_causal = True
    supports_cross = True
    needs_graph = False
    supports_relative_posenc = True
    supports_kv_cache = False  # keeps projected keys/values in ctx.kv_cache when decoding

    def __init__(self, d_model: int, heads: int):
        super().__init__()
        if d_model % heads:
            raise ConfigError(
                f"d_model={d_model} is not divisible by heads={heads}; "
                "pick heads that divide d_model"
            )
        self.d_model, self.heads, self.head_dim = d_model, heads, d_model // heads

    @classmethod
    def check_use(
        cls,
        *,
        causal: bool = False,
        cross: bool = False,
        graph: bool = False,
        relative_posenc: bool = False,
    ) -> None:
        """Raise a one-line error when this variant cannot serve the requested use."""
        name = getattr(cls, "plugin_name", cls.__name__)
        if causal and not cls.supports_causal:
            raise ConfigError(f"attention {name!r} cannot do causal (decoder) attention")
        if cross and not cls.supports_cross:
            raise ConfigError(f"attention {name!r} cannot do cross-attention")
        if relative_posenc and not cls.supports_relative_posenc:
            raise ConfigError(
                f"attention {name!r} cannot take a relative positional "
                "encoding; use one of posenc="
                + ", ".join(p.name for p in registry.plugins("posenc") if not p.cls.relative)
            )
        if cls.needs_graph and not graph:
            raise ConfigError(
                f"attention {name!r} needs graph edges, and this task gives "
                "none; tasks that give edges: "
                + ", ".join(p.name for p in registry.plugins("task") if p.cls.gives_edges)
            )


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
