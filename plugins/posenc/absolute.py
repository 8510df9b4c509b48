"""Absolute positional encodings: none, sinusoidal (Vaswani et al. 2017) and learned."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from attnbench import register
from attnbench.nn.ctx import Ctx
from attnbench.nn.posenc import PositionalEncoding
from attnbench.registry import ConfigError


@register("posenc", "none")
class NoPositionalEncoding(PositionalEncoding):
    """No positional information: attention sees a bag of tokens."""


def sinusoid_table(n: int, d_model: int) -> Tensor:
    """PE[pos, 2i] = sin(pos / 10000^(2i/d)), PE[pos, 2i+1] = cos(...); shape (n, d)."""
    pos = torch.arange(n, dtype=torch.float32)[:, None]
    inv_freq = torch.exp(
        torch.arange(0, d_model, 2, dtype=torch.float32) * (-math.log(10000.0) / d_model)
    )
    table = torch.zeros(n, d_model)
    table[:, 0::2] = torch.sin(pos * inv_freq)
    table[:, 1::2] = torch.cos(pos * inv_freq[: d_model // 2])
    return table


def _positions(x: Tensor, ctx: Ctx) -> Tensor:
    """1-D positions (B, N) from ctx, or 0..N-1."""
    if ctx.positions is not None and ctx.positions.dim() == 2:
        return ctx.positions
    return torch.arange(x.size(1), device=x.device)[None, :]


def check_max_len(pos: Tensor, max_len: int) -> None:
    """A table lookup past its end would be an index error deep in a run: say what to set."""
    if pos.numel() and int(pos.max()) >= max_len:
        raise ConfigError(
            f"position {int(pos.max())} exceeds posenc.max_len={max_len}; "
            f"raise posenc.max_len (this batch needs {int(pos.max()) + 1})"
        )


@register("posenc", "sinusoidal")
class SinusoidalEncoding(PositionalEncoding):
    """Fixed sin/cos encoding added to the embeddings."""

    def __init__(self, d_model: int, max_len: int = 4096):
        super().__init__(d_model)
        self.max_len = max_len
        self.register_buffer("table", sinusoid_table(max_len, d_model), persistent=False)

    def forward(self, x: Tensor, ctx: Ctx) -> Tensor:
        pos = _positions(x, ctx)
        check_max_len(pos, self.max_len)
        return x + self.table[pos].to(x.dtype)


@register("posenc", "learned")
class LearnedEncoding(PositionalEncoding):
    """A trained embedding per absolute position."""

    def __init__(self, d_model: int, max_len: int = 1024):
        super().__init__(d_model)
        self.max_len = max_len
        self.table = nn.Embedding(max_len, d_model)
        nn.init.normal_(self.table.weight, std=0.02)

    def forward(self, x: Tensor, ctx: Ctx) -> Tensor:
        pos = _positions(x, ctx)
        check_max_len(pos, self.max_len)
        return x + self.table(pos)
