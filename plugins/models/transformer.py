"""Transformer encoder backbone: N blocks of (attention + feed-forward, residual, LayerNorm)."""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor, nn

from attnbench import register
from attnbench.nn.blocks import EncoderBlock
from attnbench.nn.ctx import Ctx
from attnbench.nn.posenc import PositionalEncoding


@register("model", "transformer")
class Transformer(nn.Module):
    """Transformer encoder; `attention` and `posenc` are the selected plugins."""

    def __init__(self, attention: Callable[..., nn.Module],
                 posenc: Callable[..., PositionalEncoding],
                 d_model: int = 128, heads: int = 4, layers: int = 2, ff_mult: int = 4,
                 dropout: float = 0.1, norm: str = "pre"):
        super().__init__()
        self.d_model = d_model
        self.posenc = posenc(d_model=d_model, heads=heads)  # heads: for per-head biases
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(
            EncoderBlock(d_model, attention(d_model=d_model, heads=heads), ff_mult, dropout, norm)
            for _ in range(layers)
        )
        self.final_norm = nn.LayerNorm(d_model) if norm == "pre" else nn.Identity()

    def forward(self, x: Tensor, ctx: Ctx) -> Tensor:
        """(B, N, d) -> (B, N, d)"""
        x = self.drop(self.posenc(x, ctx))
        if self.posenc.relative:
            ctx = ctx.replace(posenc=self.posenc)
        for block in self.blocks:
            x = block(x, ctx)
        return self.final_norm(x)
