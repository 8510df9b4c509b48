"""Truncated (windowed) attention: each query sees only keys within ``window`` positions,
1-D on sequences, 2-D (Chebyshev distance on the grid) on image patches."""

from __future__ import annotations

from torch import Tensor

from attnbench import register
from attnbench.nn.attention import merge_heads
from attnbench.nn.ctx import Ctx
from attnbench.nn.sparse import ProjectedAttention, band_attention, grid_attention
from attnbench.registry import ConfigError


@register("attention", "truncated")
class TruncatedAttention(ProjectedAttention):
    """Local attention within |i-j| <= window (2-D window on grids); O(N·w), blocked SDPA."""

    supports_causal = True
    supports_padding = True
    supports_relative_posenc = True
    order_aware = True  # the window is over token order

    def __init__(
        self, d_model: int, heads: int, window: int = 8, dropout: float = 0.0, bias: bool = True
    ):
        super().__init__(d_model, heads, dropout, bias)
        if window < 0:
            raise ConfigError(
                f"attention.window={window} must be >= 0 (keys within that "
                "many positions of the query)"
            )
        self.window = window

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
        q, k, v = self.heads_qkv(query, key, value, ctx)  # (B, h, N, hd)
        bias = self.score_bias(ctx, q.size(-2), k.size(-2), q.dtype)
        kw = dict(
            key_valid=ctx.key_padding_mask,
            causal=ctx.causal,
            bias=bias,
            dropout_p=self.dropout if self.training else 0.0,
            need_weights=need_weights,
        )
        if ctx.positions is not None and ctx.positions.dim() == 3:  # (B, N, 2): image grid
            y, weights = grid_attention(q, k, v, ctx.positions, self.window, **kw)
        else:
            y, weights = band_attention(q, k, v, self.window, **kw)
        return self.out(merge_heads(y)), weights
