"""Per-token feed-forward backbone: no token sees another (a context-free baseline)."""

from __future__ import annotations

from torch import Tensor, nn

from attnbench import register
from attnbench.nn.backbone import Backbone
from attnbench.nn.blocks import FeedForward
from attnbench.nn.ctx import Ctx
from attnbench.registry import ConfigError


class ResidualFF(nn.Module):
    """x + FF(LayerNorm(x)) (pre-norm, as in the transformer's blocks)."""

    def __init__(self, d_model: int, ff_mult: int, dropout: float):
        super().__init__()
        self.norm = nn.LayerNorm(d_model)
        self.ff = FeedForward(d_model, ff_mult, dropout)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.ff(self.norm(x))


@register("model", "mlp")
class MLP(Backbone):
    """Residual feed-forward layers applied to each token alone; runs on any task."""

    supports_graph = True  # tokens never mix: order is irrelevant
    supports_grid = True
    supports_padding = True

    def __init__(self, d_model: int = 128, layers: int = 2, ff_mult: int = 4, dropout: float = 0.1):
        super().__init__()
        if layers < 1 or ff_mult < 1:
            raise ConfigError(f"model.layers={layers} and model.ff_mult={ff_mult} must be >= 1")
        self.d_model = d_model
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.Sequential(*(ResidualFF(d_model, ff_mult, dropout) for _ in range(layers)))
        self.final_norm = nn.LayerNorm(d_model)

    def forward(self, x: Tensor, ctx: Ctx) -> Tensor:
        """(B, N, d) -> (B, N, d); ctx is not needed: tokens never mix."""
        return self.final_norm(self.blocks(self.drop(x)))
