"""Learned relative-position bias (Shaw et al. 2018; as a per-head scalar, Raffel et al. 2020).

Each head learns one score bias per offset j - i, clipped to [-max_distance, max_distance].
With 2-D positions (B, N, 2) the bias is the sum of a row-offset and a column-offset term.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from attnbench import register
from attnbench.nn.ctx import Ctx
from attnbench.nn.posenc import PositionalEncoding, query_key_positions
from attnbench.registry import ConfigError


@register("posenc", "relative")
class RelativeBias(PositionalEncoding):
    """Learned per-head score bias for each clipped relative offset."""

    relative = True

    def __init__(self, d_model: int, heads: int, max_distance: int = 32):
        super().__init__(d_model)
        if heads < 1 or max_distance < 1:
            raise ConfigError(
                f"posenc.heads={heads} and posenc.max_distance={max_distance} "
                "must be >= 1; set model.heads"
            )
        self.heads, self.max_distance = heads, max_distance
        # (h, axis, 2m+1): axis 0 for 1-D offsets and 2-D rows, axis 1 for 2-D columns
        self.table = nn.Parameter(torch.randn(heads, 2, 2 * max_distance + 1) * 0.02)

    def _lookup(self, offset: Tensor, axis: int) -> Tensor:
        """offset (B|1, Nq, Nk) -> (B|1, h, Nq, Nk)"""
        idx = offset.round().long().clamp(-self.max_distance, self.max_distance)
        return self.table[:, axis][:, idx + self.max_distance].transpose(0, 1)

    def score_bias(self, nq: int, nk: int, ctx: Ctx) -> Tensor:
        """(B|1, h, Nq, Nk) learned bias of the offset key - query"""
        pos_q, pos_k = query_key_positions(ctx, nq, nk, self.table.device)
        offset = pos_k[:, None, :] - pos_q[:, :, None]  # (B|1, Nq, Nk[, 2])
        if offset.dim() == 4:
            return self._lookup(offset[..., 0], 0) + self._lookup(offset[..., 1], 1)
        return self._lookup(offset, 0)
