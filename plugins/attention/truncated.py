"""Truncated (windowed) attention: each query sees only keys within ``window`` positions,
1-D on sequences, 2-D (Chebyshev distance on the grid) on image patches.

``kernel``: auto (default) runs FlexAttention's block-sparse kernel where it is available
and faster (CUDA), attnbench's blocked/gather kernels elsewhere (CPU training, weights,
dropout, score biases); flex or native force one (see attnbench.nn.flex)."""

from __future__ import annotations

from typing import Literal

from torch import Tensor

from attnbench import register
from attnbench.nn.attention import merge_heads
from attnbench.nn.ctx import Ctx
from attnbench.nn.flex import attend, band_flex, check_kernel, grid_flex
from attnbench.nn.sparse import ProjectedAttention, band_attention, grid_attention
from attnbench.registry import ConfigError


@register("attention", "truncated")
class TruncatedAttention(ProjectedAttention):
    """Local attention within |i-j| <= window (2-D window on grids); O(N·w): FlexAttention
    or blocked SDPA (1-D) / gathers (2-D)."""

    supports_causal = True
    supports_padding = True
    supports_relative_posenc = True
    order_aware = True  # the window is over token order

    def __init__(
        self,
        d_model: int,
        heads: int,
        window: int = 8,
        dropout: float = 0.0,
        bias: bool = True,
        kernel: Literal["auto", "flex", "native"] = "auto",
    ):
        super().__init__(d_model, heads, dropout, bias)
        if window < 0:
            raise ConfigError(
                f"attention.window={window} must be >= 0 (keys within that "
                "many positions of the query)"
            )
        self.window = window
        self.kernel = check_kernel(kernel)

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
        dropout_p = self.dropout if self.training else 0.0
        grid = ctx.positions is not None and ctx.positions.dim() == 3  # (B, N, 2): image grid
        kw = dict(key_valid=ctx.key_padding_mask, causal=ctx.causal)

        def flex() -> Tensor:  # (B, h, N, hd)
            if grid:
                return grid_flex(q, k, v, ctx.positions, self.window, **kw)
            return band_flex(q, k, v, self.window, **kw)

        def native() -> tuple[Tensor, Tensor | None]:
            more = dict(bias=bias, dropout_p=dropout_p, need_weights=need_weights)
            if grid:
                return grid_attention(q, k, v, ctx.positions, self.window, **kw, **more)
            return band_attention(q, k, v, self.window, **kw, **more)

        call = dict(need_weights=need_weights, dropout_p=dropout_p, bias=bias)
        y, weights = attend(self.kernel, flex, native, q, k, v, **call)
        return self.out(merge_heads(y)), weights
