"""Windowed MLP backbone: each token's feed-forward sees its 2w+1 neighbours, concatenated."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from attnbench import register
from attnbench.nn.backbone import Backbone
from attnbench.nn.ctx import Ctx
from attnbench.registry import ConfigError


class WindowBlock(nn.Module):
    """x + FF(concat of the LayerNorm'd window around each token), pads zeroed first."""

    def __init__(self, d_model: int, window: int, ff_mult: int, dropout: float):
        super().__init__()
        self.width = 2 * window + 1
        self.norm = nn.LayerNorm(d_model)
        self.ff = nn.Sequential(
            nn.Linear(self.width * d_model, ff_mult * d_model),
            nn.GELU(),
            nn.Linear(ff_mult * d_model, d_model),
            nn.Dropout(dropout),
        )

    def forward(self, x: Tensor, mask: Tensor, causal: bool) -> Tensor:
        B, N, d = x.shape
        h = (self.norm(x) * mask).transpose(1, 2)  # (B, d, N), pads zero: they never leak
        left = self.width - 1 if causal else self.width // 2  # causal: only the past
        h = F.pad(h, (left, self.width - 1 - left))  # (B, d, N + 2w)
        h = h.unfold(2, self.width, 1)  # (B, d, N, 2w+1): a view, no loop over positions
        h = h.permute(0, 2, 3, 1).reshape(B, N, self.width * d)  # (B, N, (2w+1)*d)
        return x + self.ff(h)


@register("model", "window_mlp")
class WindowMLP(Backbone):
    """Residual MLP layers over windows of `window` tokens each side (causal: 2w before)."""

    supports_grid = True  # patches windowed in raster order
    supports_padding = True  # pads are masked out of each window

    def __init__(
        self,
        d_model: int = 128,
        window: int = 2,
        layers: int = 2,
        ff_mult: int = 4,
        dropout: float = 0.1,
    ):
        super().__init__()
        if window < 0 or layers < 1 or ff_mult < 1:
            raise ConfigError(
                f"model.window={window} must be >= 0, model.layers={layers} and "
                f"model.ff_mult={ff_mult} >= 1"
            )
        self.d_model, self.window, self.layers = d_model, window, layers
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(
            WindowBlock(d_model, window, ff_mult, dropout) for _ in range(layers)
        )
        self.final_norm = nn.LayerNorm(d_model)

    @property
    def receptive_field(self) -> int:
        """Tokens one output sees: 1 + layers * 2w."""
        return 1 + self.layers * 2 * self.window

    def forward(self, x: Tensor, ctx: Ctx) -> Tensor:
        """(B, N, d) -> (B, N, d)"""
        x = self.drop(x)
        if ctx.key_padding_mask is None:
            mask = x.new_ones(*x.shape[:2], 1)
        else:
            mask = ctx.key_padding_mask.unsqueeze(-1).to(x.dtype)  # (B, N, 1)
        for block in self.blocks:
            x = block(x, mask, ctx.causal)
        return self.final_norm(x)
