"""The positional-encoding contract shared by every posenc plugin."""

from __future__ import annotations

from torch import Tensor, nn

from attnbench.nn.ctx import Ctx


class PositionalEncoding(nn.Module):
    """Base class of posenc plugins.

    Absolute encodings override :meth:`forward` to add to the embeddings (B, N, d).
    Relative encodings set ``relative = True`` and override :meth:`rotate` (act on q/k,
    as RoPE does) and/or :meth:`score_bias` (add to the attention scores, as ALiBi does);
    the attention calls them through ``ctx.posenc``.
    """

    relative = False

    def __init__(self, d_model: int):
        super().__init__()
        self.d_model = d_model

    def forward(self, x: Tensor, ctx: Ctx) -> Tensor:
        return x

    def rotate(self, q: Tensor, k: Tensor, ctx: Ctx) -> tuple[Tensor, Tensor]:
        """q, k: (B, heads, N, head_dim) -> the same, position-aware."""
        return q, k

    def score_bias(self, nq: int, nk: int, ctx: Ctx) -> Tensor | None:
        """A float bias broadcastable to (B, heads, Nq, Nk), or None."""
        return None
