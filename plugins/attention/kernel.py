"""Gaussian-kernel attention (Nadaraya 1964, Watson 1964; d2l 10.2):
score(q, k) = −‖q − k‖² / (2 · width²), softmax over the keys, a weighted sum of values.

``attention.width`` is the kernel's width (bandwidth): a narrow kernel puts all the weight
on the nearest key (nearest-neighbour regression), a wide one spreads it evenly (the mean
of the values). d2l writes the same score as −((q − k)·w)²/2 with w = 1/width; with
``attention.learn_width=true`` that w is a learned parameter (parametric attention
pooling), with ``false`` it stays fixed (non-parametric: nothing in the pooling learns).

Inside a transformer the default ``attention.project=true`` learns q/k/v/output maps as
every other variant does: a distance between raw token embeddings would mix content the
keys should match on with content the values should carry. ``attention.project=false``
uses queries, keys and values as given (per head, on its slice of features), for a task
that hands the attention the points themselves, as task=regression does with
model.d_model=1.

Scores come from ScoreAttention, which applies masks, relative encodings, the KV cache
and the softmax, so every capability it declares holds here too. The squared distance is
taken in float32 for half-precision inputs (‖q‖² + ‖k‖² − 2q·k cancels, and 2^16 overflows
float16). The scores are ≤ 0 and shifted so that the nearest key's is 0 (a constant per
row: the softmax is unchanged), so a narrow kernel underflows far keys to exactly 0
weight, never to NaN.
"""

from __future__ import annotations

from typing import Annotated

import torch
from torch import Tensor, nn

from attnbench import register
from attnbench.nn.attention import ScoreAttention, compute_dtype
from attnbench.params import Range


@register("attention", "kernel")
class KernelAttention(ScoreAttention):
    """Nadaraya–Watson attention: a Gaussian kernel of the q–k distance, width fixed or
    learned (attention.width, attention.learn_width); attention.project=false for raw
    q/k/v."""

    def __init__(
        self,
        d_model: int,
        heads: int,
        width: Annotated[float, Range(min=0, min_open=True)] = 1.0,
        learn_width: bool = True,
        project: bool = True,
        dropout: float = 0.0,
        bias: bool = True,
    ):
        super().__init__(d_model, heads, dropout, bias)
        if not project:  # q, k, v as given: no maps before or after the pooling
            self.q_proj = self.k_proj = self.v_proj = self.out = nn.Identity()
        self.learn_width = learn_width
        # w = 1/width, learned as d2l learns it: smooth through every width (w -> 0: the
        # mean). Fixed, it stays a Python float: exact whatever dtype the module takes.
        self.inverse_width: nn.Parameter | float = (
            nn.Parameter(torch.tensor(1.0 / width)) if learn_width else 1.0 / width
        )

    @property
    def width(self) -> float:
        """The current kernel width, 1/|w| (inf once a learned w reaches 0)."""
        w = self.inverse_width
        w = abs(float(w.detach()) if isinstance(w, Tensor) else w)
        return float("inf") if w == 0 else 1.0 / w

    def score(self, q: Tensor, k: Tensor) -> Tensor:
        """q (B, h, Nq, hd), k (B, h, Nk, hd) -> −w²/2 · ‖q − k‖² (B, h, Nq, Nk), less each
        row's largest score (the softmax is the same; see below)."""
        dtype = compute_dtype(q.dtype)
        with torch.autocast(q.device.type, enabled=False):
            q, k = q.to(dtype), k.to(dtype)
            qq = q.square().sum(-1, keepdim=True)  # (B, h, Nq, 1)
            kk = k.square().sum(-1).unsqueeze(-2)  # (B, h, 1, Nk)
            # rounding may leave a tiny negative distance between (near) equal points
            dist2 = (qq + kk - 2 * q @ k.transpose(-2, -1)).clamp_min(0)  # (B, h, Nq, Nk)
            # The nearest key scores exactly 0 whatever the width: however narrow the kernel
            # (w² capped at the dtype's largest number, never inf), a row never holds only
            # -inf scores, whose softmax would be NaN; far keys underflow to weight 0.
            dist2 = dist2 - dist2.amin(-1, keepdim=True)
            w, big = self.inverse_width, torch.finfo(dtype).max
            w2 = w.to(dtype).square().clamp_max(big) if isinstance(w, Tensor) else min(w * w, big)
            return -0.5 * w2 * dist2
