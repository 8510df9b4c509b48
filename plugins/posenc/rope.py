"""Rotary position embedding, RoPE (Su et al. 2021): rotate q and k by position-dependent angles.

Each pair of features (i, i + hd/2) turns by pos · base^(-2i/hd); rotations keep norms and
q_m·k_n depends only on m - n. 2-D positions (B, N, 2) rotate half of the features by the
row and half by the column (axial 2-D RoPE).
"""

from __future__ import annotations

from typing import Annotated

import torch
from torch import Tensor

from attnbench import register
from attnbench.nn.ctx import Ctx
from attnbench.nn.posenc import PositionalEncoding, query_key_positions
from attnbench.params import Range
from attnbench.registry import ConfigError


@register("posenc", "rope")
class RotaryEncoding(PositionalEncoding):
    """Rotary position embedding on q and k; 1-D or 2-D (axial) positions."""

    relative = True

    def __init__(self, d_model: int, base: Annotated[float, Range(min=1, min_open=True)] = 10000.0):
        super().__init__(d_model)
        if base <= 1:
            raise ConfigError(f"posenc.base={base} must be > 1 (10000 is usual)")
        self.base = base

    def _angles(self, pos: Tensor, dim: int) -> Tensor:
        """pos (B|1, N) -> angles (B|1, 1, N, dim/2), one per feature pair."""
        inv_freq = self.base ** (
            -torch.arange(0, dim, 2, device=pos.device, dtype=torch.float32) / dim
        )
        return (pos.to(torch.float32)[..., None] * inv_freq)[:, None]

    def _rotate(self, x: Tensor, pos: Tensor) -> Tensor:
        """x (B, h, N, hd) rotated by pos (B|1, N) or, axially, by pos (B|1, N, 2)."""
        if pos.dim() == 3:  # 2-D: first half of the features by row, second by column
            a, b = x.chunk(2, dim=-1)
            return torch.cat([self._rotate(a, pos[..., 0]), self._rotate(b, pos[..., 1])], -1)
        angles = self._angles(pos, x.size(-1))  # (B|1, 1, N, hd/2)
        cos, sin = angles.cos().to(x.dtype), angles.sin().to(x.dtype)
        x1, x2 = x.chunk(2, dim=-1)  # pairs (i, i + hd/2), as in GPT-NeoX
        return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)

    def rotate(self, q: Tensor, k: Tensor, ctx: Ctx) -> tuple[Tensor, Tensor]:
        """q (B, h, Nq, hd), k (B, h, Nk, hd) -> the same, rotated by position."""
        hd = q.size(-1)
        two_d = ctx.positions is not None and ctx.positions.dim() == 3
        if hd % (4 if two_d else 2):
            raise ConfigError(
                f"posenc 'rope' needs a head size divisible by {4 if two_d else 2} "
                f"({'2-D' if two_d else '1-D'} positions), got {hd}; "
                "change model.d_model or model.heads"
            )
        pos_q, pos_k = query_key_positions(ctx, q.size(-2), k.size(-2), q.device)
        return self._rotate(q, pos_q), self._rotate(k, pos_k)
