"""Recurrent backbone: stacked LSTM or GRU (cuDNN / fused kernels via nn.LSTM / nn.GRU).

On a sequence-to-sequence task (task.seq2seq) an RNN encoder-decoder: the decoder starts
from a state computed from the encoder's outputs and, unless ``use_attention=false``
(Sutskever et al. 2014 / Cho et al. 2014), attends over them through the selected attention
plugin: attention=additive scores as Bahdanau et al. 2015, attention=dot as Luong et al. 2015.
The attention sits on the decoder's output (Luong's global attention, h~ = tanh(W[c; h]),
no input feeding), so teacher forcing is one fused RNN call plus one attention call.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from attnbench import register
from attnbench.nn.backbone import Backbone
from attnbench.nn.ctx import Ctx
from attnbench.registry import ConfigError

CELLS = {"lstm": nn.LSTM, "gru": nn.GRU}


@register("model", "rnn")
class RNN(Backbone):
    """LSTM/GRU, uni- or bidirectional, hidden = d_model per direction, projected to d_model;
    an encoder-decoder on seq2seq tasks (use_attention, heads: its decoder's attention)."""

    supports_grid = True  # patches read in raster order
    supports_padding = True  # pads are packed away
    supports_seq2seq = True

    def __init__(
        self,
        task: Any,
        attention: Callable[..., nn.Module],
        d_model: int = 128,
        cell: Literal["lstm", "gru"] = "lstm",
        bidirectional: bool = True,
        layers: int = 2,
        dropout: float = 0.1,
        use_attention: bool = True,
        heads: int = 1,
    ):
        super().__init__()
        if cell not in CELLS:
            raise ConfigError(f"model.cell={cell!r} is not one of {', '.join(CELLS)}")
        if layers < 1:
            raise ConfigError(f"model.layers={layers} must be >= 1")
        self.d_model, self.bidirectional = d_model, bidirectional
        self.drop = nn.Dropout(dropout)
        # nn.LSTM's dropout acts between layers only (it warns when layers == 1).
        self.rnn = CELLS[cell](
            d_model,
            d_model,
            num_layers=layers,
            batch_first=True,
            bidirectional=bidirectional,
            dropout=dropout if layers > 1 else 0.0,
        )
        directions = 2 if bidirectional else 1
        self.proj = nn.Linear(directions * d_model, d_model) if bidirectional else nn.Identity()
        self.norm = nn.LayerNorm(d_model)
        self.seq2seq = bool(getattr(task, "seq2seq", False))
        if self.seq2seq:
            self._build_decoder(attention, cell, layers, dropout, use_attention, heads)

    def _build_decoder(
        self, attention, cell: str, layers: int, dropout: float, use_attention: bool, heads: int
    ) -> None:
        d = self.d_model
        self.cell, self.layers = cell, layers
        self.decoder = CELLS[cell](
            d, d, num_layers=layers, batch_first=True, dropout=dropout if layers > 1 else 0.0
        )
        # initial decoder state from the mean encoder output: h (and c for an LSTM) per layer
        self.states = 2 if cell == "lstm" else 1
        self.bridge = nn.Linear(d, self.states * layers * d)
        self.attn = None
        if use_attention:
            self.attn = attention(d_model=d, heads=heads)
            self.combine = nn.Linear(2 * d, d)  # Luong's attentional hidden state
        self.decoder_norm = nn.LayerNorm(d)

    def forward(self, x: Tensor, ctx: Ctx) -> Tensor:
        """(B, N, d) -> (B, N, d); pads are packed away, so they never reach a real token."""
        if ctx.causal and self.bidirectional:
            raise ConfigError(
                "model=rnn with model.bidirectional=true sees the future, which a "
                "causal task forbids; set model.bidirectional=false"
            )
        B, N, _ = x.shape
        x = self.drop(x)
        if ctx.key_padding_mask is None:
            out, _ = self.rnn(x)  # (B, N, dirs*d)
        else:
            # Lengths live on the CPU for packing; an empty row still gets one step.
            lengths = ctx.key_padding_mask.sum(1).clamp(min=1).cpu()
            packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
            out, _ = self.rnn(packed)
            out, _ = pad_packed_sequence(out, batch_first=True, total_length=N)  # pads are 0
        return self.norm(self.drop(self.proj(out)))

    def encode(self, x: Tensor, ctx: Ctx) -> Tensor:
        """Source (B, S, d) -> memory (B, S, d); the encoder may be bidirectional."""
        return self(x, ctx.replace(causal=False))

    def _initial_state(self, memory: Tensor, src_ctx: Ctx) -> Tensor:
        """(B, states, layers, d): tanh(W · mean of the real encoder outputs)."""
        if src_ctx.key_padding_mask is None:
            pooled = memory.mean(1)
        else:
            keep = src_ctx.key_padding_mask.unsqueeze(-1).to(memory.dtype)  # (B, S, 1)
            pooled = (memory * keep).sum(1) / keep.sum(1).clamp(min=1)  # (B, d)
        return torch.tanh(self.bridge(pooled)).view(-1, self.states, self.layers, self.d_model)

    def decode(
        self, y: Tensor, memory: Tensor, src_ctx: Ctx, cache: dict | None = None
    ) -> tuple[Tensor, dict]:
        """Target embeddings y (B, T, d) -> (h (B, T, d), cache); the cache is the decoder's
        recurrent state, batch-first (B, states, layers, d), so one step costs one RNN step."""
        state = cache["state"] if cache else self._initial_state(memory, src_ctx)
        hx = state.permute(1, 2, 0, 3).contiguous()  # (states, layers, B, d)
        out, new = self.decoder(self.drop(y), (hx[0], hx[1]) if self.states == 2 else hx[0])
        new = torch.stack(new) if self.states == 2 else new[None]  # (states, layers, B, d)
        if self.attn is not None:
            ctx = Ctx(key_padding_mask=src_ctx.key_padding_mask)
            c, _ = self.attn(out, memory, memory, ctx=ctx)  # (B, T, d)
            out = torch.tanh(self.combine(torch.cat([c, out], dim=-1)))
        h = self.decoder_norm(self.drop(out))
        return h, {"state": new.permute(2, 0, 1, 3)}
