"""Convolutional backbone: stacked 1-D convolutions over a sequence, or 2-D convolutions
over the patch grid when the task's tokens sit on one (task.grid: ctx.positions (B, N, 2)).

Which one is fixed at construction, so the parameter count never includes unused weights."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnbench import register
from attnbench.nn.backbone import Backbone
from attnbench.nn.ctx import Ctx
from attnbench.registry import ConfigError


class ConvBlock(nn.Module):
    """LayerNorm -> zero the pads -> conv -> GELU -> dropout (+ residual), channels-last.

    Works on (B, N, d) with a 1-D conv or on (B, H, W, d) with a 2-D conv; `mask` is
    (B, N, 1) / (B, H, W, 1) with 1 where a real token sits, 0 elsewhere.
    """

    def __init__(
        self,
        d_model: int,
        kernel_size: int,
        dilation: int,
        dims: int,
        residual: bool,
        dropout: float,
    ):
        super().__init__()
        conv = nn.Conv1d if dims == 1 else nn.Conv2d
        self.conv = conv(d_model, d_model, kernel_size, dilation=dilation)
        self.norm = nn.LayerNorm(d_model)
        self.drop = nn.Dropout(dropout)
        self.residual = residual
        self.span = (kernel_size - 1) * dilation  # how many extra inputs one output sees

    def _pad(self, h: Tensor, causal: bool) -> Tensor:
        """Zero padding so the output keeps the input's size ('same'; left-only if causal)."""
        left = self.span if causal else self.span // 2
        return F.pad(h, (left, self.span - left) * (h.dim() - 2))  # every spatial axis

    def forward(self, x: Tensor, mask: Tensor, causal: bool = False) -> Tensor:
        h = self.norm(x) * mask  # pads are zero before every conv: they never leak
        h = self.conv(self._pad(h.movedim(-1, 1), causal)).movedim(1, -1)  # (B, *S, d)
        h = self.drop(F.gelu(h))
        return x + h if self.residual else h


@register("model", "cnn")
class CNN(Backbone):
    """Stacked convolutions, layer i dilated by dilation**i; 2-D over a task's patch grid."""

    supports_grid = True  # 2-D convolutions over the patch grid
    supports_padding = True  # pads are zeroed before every convolution

    def __init__(
        self,
        task,
        d_model: int = 128,
        layers: int = 4,
        kernel_size: int = 3,
        dilation: int = 2,
        residual: bool = True,
        dropout: float = 0.1,
    ):
        super().__init__()
        if kernel_size < 1 or layers < 1 or dilation < 1:
            raise ConfigError(
                f"model.kernel_size={kernel_size}, model.layers={layers}, "
                f"model.dilation={dilation}: all must be >= 1"
            )
        self.d_model, self.layers = d_model, layers
        grid = bool(getattr(task, "grid", False))  # the task's tokens sit on a 2-D grid
        self.kernel_size, self.dilation, self.grid = kernel_size, dilation, grid
        # One kind of weight only: unused 2-D weights would inflate the parameter count.
        self.blocks = nn.ModuleList(
            ConvBlock(d_model, kernel_size, dilation**i, 2 if grid else 1, residual, dropout)
            for i in range(layers)
        )
        self.final_norm = nn.LayerNorm(d_model)

    @property
    def receptive_field(self) -> int:
        """Tokens (grid: patches per axis) one output sees: 1 + sum_i (k - 1) * dilation**i.
        The harness may record it: getattr(backbone, "receptive_field", None)."""
        return 1 + sum((self.kernel_size - 1) * self.dilation**i for i in range(self.layers))

    def forward(self, x: Tensor, ctx: Ctx) -> Tensor:
        """(B, N, d) -> (B, N, d)"""
        real = ctx.key_padding_mask
        if real is None:
            real = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
        two_d = ctx.positions is not None and ctx.positions.dim() == 3
        if two_d != self.grid:
            raise ConfigError(
                "model=cnn got 2-D patch positions from a task whose grid is False"
                if two_d
                else "model=cnn was built for a grid task "
                "(task.grid=True) but got no 2-D positions (ctx.positions "
                "(B, N, 2))"
            )
        if self.grid:
            if ctx.causal:
                raise ConfigError(
                    "model=cnn: causal convolution over a 2-D grid is not "
                    "supported; use model=transformer"
                )
            return self.final_norm(self._forward_2d(x, real, ctx.positions))
        mask = real.unsqueeze(-1).to(x.dtype)  # (B, N, 1)
        for block in self.blocks:
            x = block(x, mask, ctx.causal)
        return self.final_norm(x)

    def _forward_2d(self, x: Tensor, real: Tensor, positions: Tensor) -> Tensor:
        """Scatter tokens onto their (row, col) cells, convolve the grid, gather back.
        Tokens at negative positions (a CLS token) and pads pass through unchanged."""
        B, N, d = x.shape
        on_grid = real & (positions >= 0).all(-1)  # (B, N)
        pos = torch.where(on_grid.unsqueeze(-1), positions, 0).long()  # (B, N, 2)
        H, W = (int(v) + 1 for v in pos.flatten(0, 1).amax(0).tolist())
        batch = torch.arange(B, device=x.device).unsqueeze(1).expand(B, N)
        cell = ((batch * H + pos[..., 0]) * W + pos[..., 1])[on_grid]  # (T,) flat cell index
        grid = x.new_zeros(B * H * W, d)
        grid[cell] = x[on_grid]
        mask = x.new_zeros(B * H * W, 1)
        mask[cell] = 1.0
        grid, mask = grid.view(B, H, W, d), mask.view(B, H, W, 1)
        for block in self.blocks:
            grid = block(grid, mask)  # (B, H, W, d)
        out = x.clone()
        out[on_grid] = grid.reshape(B * H * W, d)[cell].to(out.dtype)  # autocast: bf16 convs
        return out
