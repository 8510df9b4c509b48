"""The positional-encoding contract shared by every posenc plugin."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from attnbench.nn.ctx import Ctx
from attnbench.registry import ConfigError


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


def query_key_positions(ctx: Ctx, nq: int, nk: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """Positions of the queries and keys: (B|1, Nq[, 2]) and (B|1, Nk[, 2]).

    From ctx.positions when it covers the keys (queries are then the last Nq of them, as in
    step-wise decoding) or the queries (cross-attention: keys count from 0); else 0..N-1.
    """
    p = ctx.positions
    if p is not None and p.size(1) == nk and nq <= nk:
        return p[:, nk - nq :], p
    if p is not None and p.size(1) == nq:
        return p, torch.arange(nk, device=device)[None]
    if p is not None and p.dim() == 3:
        raise ConfigError(
            f"2-D positions cover {p.size(1)} tokens but the attention has "
            f"{nq} queries and {nk} keys; give positions for the keys"
        )
    pos_k = torch.arange(nk, device=device)[None]
    pos_q = pos_k[:, nk - nq :] if nq <= nk else torch.arange(nq, device=device)[None]
    return pos_q, pos_k
