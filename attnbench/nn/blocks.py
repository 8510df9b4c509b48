"""Transformer building blocks reused by backbones."""

from __future__ import annotations

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
