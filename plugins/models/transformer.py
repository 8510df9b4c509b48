"""Transformer backbone: N blocks of (attention + feed-forward, residual, LayerNorm).

An encoder on ordinary tasks; on a sequence-to-sequence task (task.seq2seq) an
encoder-decoder (Vaswani et al. 2017) whose encoder self-attention, causal decoder
self-attention and cross-attention all come from the selected attention plugin.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import torch
from torch import Tensor, nn

from attnbench import register
from attnbench.nn.backbone import Backbone
from attnbench.nn.blocks import DecoderBlock, EncoderBlock
from attnbench.nn.ctx import Ctx
from attnbench.nn.posenc import PositionalEncoding


@register("model", "transformer")
class Transformer(Backbone):
    """Transformer encoder (encoder-decoder on seq2seq tasks); `attention`, `posenc` are
    the selected plugins; the decoder has as many layers as the encoder."""

    supports_graph = True  # attention sees a set; order comes from the posenc
    supports_grid = True
    supports_padding = True
    supports_seq2seq = True
    supports_attention_pooling = True  # its attention layers are plain Attention modules

    def __init__(
        self,
        attention: Callable[..., nn.Module],
        posenc: Callable[..., PositionalEncoding],
        task: Any,
        d_model: int = 128,
        heads: int = 4,
        layers: int = 2,
        ff_mult: int = 4,
        dropout: float = 0.1,
        norm: Literal["pre", "post"] = "pre",
    ):
        super().__init__()
        self.d_model = d_model
        self.posenc = posenc(d_model=d_model, heads=heads)  # heads: for per-head biases
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(
            EncoderBlock(d_model, attention(d_model=d_model, heads=heads), ff_mult, dropout, norm)
            for _ in range(layers)
        )
        self.final_norm = nn.LayerNorm(d_model) if norm == "pre" else nn.Identity()
        self.seq2seq = bool(getattr(task, "seq2seq", False))
        if not self.seq2seq:
            return
        self.decoder_blocks = nn.ModuleList(
            DecoderBlock(
                d_model,
                attention(d_model=d_model, heads=heads),
                attention(d_model=d_model, heads=heads),
                ff_mult,
                dropout,
                norm,
            )
            for _ in range(layers)
        )
        self.decoder_norm = nn.LayerNorm(d_model) if norm == "pre" else nn.Identity()

    def forward(self, x: Tensor, ctx: Ctx) -> Tensor:
        """(B, N, d) -> (B, N, d)"""
        x = self.drop(self.posenc(x, ctx))
        if self.posenc.relative:
            ctx = ctx.replace(posenc=self.posenc)
        for block in self.blocks:
            x = block(x, ctx)
        return self.final_norm(x)

    def encode(self, x: Tensor, ctx: Ctx) -> Tensor:
        """Source (B, S, d) -> memory (B, S, d)"""
        return self(x, ctx)

    def decode(
        self, y: Tensor, memory: Tensor, src_ctx: Ctx, cache: dict | None = None
    ) -> tuple[Tensor, dict]:
        """Target embeddings y (B, T, d) at positions cache["pos"] onwards -> (h (B, T, d),
        cache). Teacher forcing: the whole target, cache=None. Generation: one token at a
        time with the returned cache (each layer's projected keys/values, see DecoderBlock)."""
        offset = cache["pos"] if cache else 0
        past = cache["layers"] if cache else [None] * len(self.decoder_blocks)
        T = y.size(1)
        positions = torch.arange(offset, offset + T, device=y.device)[None]  # (1, T)
        y = self.drop(self.posenc(y, Ctx(positions=positions)))
        # Queries are the last T of the t+T keys: relative encodings count from 0 themselves.
        self_ctx = Ctx(causal=True, posenc=self.posenc if self.posenc.relative else None)
        cross_ctx = Ctx(key_padding_mask=src_ctx.key_padding_mask)  # no positions across
        layers = []
        for block, state in zip(self.decoder_blocks, past):
            y, state = block(y, memory, self_ctx, cross_ctx, state)
            layers.append(state)
        return self.decoder_norm(y), {"pos": offset + T, "layers": layers}
