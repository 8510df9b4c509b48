"""Input embedders and output heads shared by token tasks."""

from __future__ import annotations

import math

from torch import Tensor, nn

from attnbench.nn.ctx import Ctx


class TokenEmbedder(nn.Module):
    """batch["tokens"] (B, N) -> (x (B, N, d), Ctx with the key padding mask); pad id 0."""

    def __init__(self, vocab_size: int, d_model: int, pad: int = 0):
        super().__init__()
        self.pad, self.scale = pad, math.sqrt(d_model)
        self.embed = nn.Embedding(vocab_size, d_model, padding_idx=pad)
        nn.init.normal_(self.embed.weight, std=d_model**-0.5)

    def forward(self, batch: dict[str, Tensor]) -> tuple[Tensor, Ctx]:
        tokens = batch["tokens"]
        return self.embed(tokens) * self.scale, Ctx(key_padding_mask=tokens != self.pad)


class PooledClassifier(nn.Module):
    """Mean over real (non-pad) positions, then a linear layer: (B, N, d) -> (B, classes)."""

    def __init__(self, d_model: int, classes: int):
        super().__init__()
        self.proj = nn.Linear(d_model, classes)

    def forward(self, h: Tensor, ctx: Ctx) -> Tensor:
        if ctx.key_padding_mask is None:
            return self.proj(h.mean(dim=1))
        keep = ctx.key_padding_mask.unsqueeze(-1).to(h.dtype)  # (B, N, 1)
        return self.proj((h * keep).sum(1) / keep.sum(1).clamp(min=1))
