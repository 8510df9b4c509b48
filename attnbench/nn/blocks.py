"""Transformer building blocks reused by backbones."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from attnbench.nn.ctx import Ctx
from attnbench.registry import ConfigError

NORMS = ("pre", "post")


class FeedForward(nn.Sequential):
    def __init__(self, d_model: int, ff_mult: int, dropout: float):
        super().__init__(
            nn.Linear(d_model, ff_mult * d_model),
            nn.GELU(),
            nn.Linear(ff_mult * d_model, d_model),
            nn.Dropout(dropout),
        )


class EncoderBlock(nn.Module):
    """Self-attention + feed-forward, each with a residual and LayerNorm (pre or post)."""

    def __init__(self, d_model: int, attention: nn.Module, ff_mult: int = 4,
                 dropout: float = 0.1, norm: str = "pre"):
        super().__init__()
        if norm not in NORMS:
            raise ConfigError(f"model.norm={norm!r} is not one of {', '.join(NORMS)}")
        self.pre_norm = norm == "pre"
        self.attn = attention
        self.ff = FeedForward(d_model, ff_mult, dropout)
        self.norm1, self.norm2 = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.drop = nn.Dropout(dropout)

    def _attend(self, x: Tensor, ctx: Ctx) -> Tensor:
        out, _ = self.attn(x, x, x, ctx=ctx)
        return self.drop(out)

    def forward(self, x: Tensor, ctx: Ctx) -> Tensor:
        if self.pre_norm:
            h = self.norm1(x)
            x = x + self._attend(h, ctx)
            return x + self.ff(self.norm2(x))
        x = self.norm1(x + self._attend(x, ctx))
        return self.norm2(x + self.ff(x))


class DecoderBlock(nn.Module):
    """Causal self-attention, cross-attention over the encoder memory, feed-forward; each
    with a residual and LayerNorm (pre or post).

    Incremental decoding: the attention plugins project keys and values themselves, so the
    block caches its self-attention *inputs* for the positions decoded so far (``past``,
    (B, t, d)); a step then runs one query row through every layer instead of the prefix.
    """

    def __init__(self, d_model: int, self_attention: nn.Module, cross_attention: nn.Module,
                 ff_mult: int = 4, dropout: float = 0.1, norm: str = "pre"):
        super().__init__()
        if norm not in NORMS:
            raise ConfigError(f"model.norm={norm!r} is not one of {', '.join(NORMS)}")
        self.pre_norm = norm == "pre"
        self.self_attn, self.cross_attn = self_attention, cross_attention
        self.ff = FeedForward(d_model, ff_mult, dropout)
        self.norm1, self.norm2, self.norm3 = (nn.LayerNorm(d_model) for _ in range(3))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, memory: Tensor, self_ctx: Ctx, cross_ctx: Ctx,
                past: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """x (B, T, d) new positions, memory (B, S, d), past (B, t, d) or None ->
        (out (B, T, d), self-attention inputs of all t + T positions (B, t+T, d))."""
        h = self.norm1(x) if self.pre_norm else x
        kv = h if past is None else torch.cat([past, h], dim=1)  # (B, t+T, d)
        a, _ = self.self_attn(h, kv, kv, ctx=self_ctx)  # queries are the last T positions
        if self.pre_norm:
            x = x + self.drop(a)
            c, _ = self.cross_attn(self.norm2(x), memory, memory, ctx=cross_ctx)
            x = x + self.drop(c)
            return x + self.ff(self.norm3(x)), kv
        x = self.norm1(x + self.drop(a))
        c, _ = self.cross_attn(x, memory, memory, ctx=cross_ctx)
        x = self.norm2(x + self.drop(c))
        return self.norm3(x + self.ff(x)), kv
