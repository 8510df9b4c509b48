"""ALiBi (Press et al. 2022): no embeddings; each head adds -slope · |i - j| to its scores.

Slopes are the geometric sequence 2^(-8/h), 2^(-16/h), ... of the paper (interleaved for a
head count that is not a power of two). With 2-D positions (B, N, 2) the distance is the
Euclidean distance between grid positions.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from attnbench import register
from attnbench.nn.attention import compute_dtype
from attnbench.nn.ctx import Ctx
from attnbench.nn.posenc import PositionalEncoding, query_key_positions
from attnbench.registry import ConfigError


def alibi_slopes(heads: int) -> Tensor:
    """(heads,) head slopes; for 8 heads 1/2, 1/4, ..., 1/256."""

    def geometric(n: int) -> list[float]:
        return [2 ** (-8 * (i + 1) / n) for i in range(n)]

    low = 2 ** math.floor(math.log2(heads))
    slopes = geometric(low) + geometric(2 * low)[0::2][: heads - low]
    return torch.tensor(slopes)


@register("posenc", "alibi")
class ALiBi(PositionalEncoding):
    """Attention with linear biases: per-head penalty proportional to the distance."""

    relative = True

    def __init__(self, d_model: int, heads: int):
        super().__init__(d_model)
        if heads < 1:
            raise ConfigError(f"posenc.heads={heads} must be >= 1; set model.heads")
        self.heads = heads
        self.register_buffer("slopes", alibi_slopes(heads), persistent=False)

    def score_bias(self, nq: int, nk: int, ctx: Ctx) -> Tensor:
        """(B|1, h, Nq, Nk) = -slope_h · distance(query, key)"""
        pos_q, pos_k = query_key_positions(ctx, nq, nk, self.slopes.device)
        # distances in float32 even when the model is in half precision: bfloat16 holds
        # integers exactly only up to 256; the attention casts the bias to its scores' dtype
        dtype = compute_dtype(self.slopes.dtype)
        diff = pos_q[:, :, None].to(dtype) - pos_k[:, None, :].to(dtype)  # (B|1, Nq, Nk[, 2])
        dist = diff.norm(dim=-1) if diff.dim() == 4 else diff.abs()
        return -self.slopes.to(dtype)[:, None, None] * dist[:, None]
