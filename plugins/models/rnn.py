"""Recurrent backbone: stacked LSTM or GRU (cuDNN / fused kernels via nn.LSTM / nn.GRU).

On a sequence-to-sequence task (task.seq2seq) an RNN encoder-decoder: the decoder starts
from a state computed from the encoder's outputs and, unless ``use_attention=false``
(Sutskever et al. 2014 / Cho et al. 2014), attends over them through the selected attention
plugin: attention=additive scores as Bahdanau et al. 2015, attention=dot as Luong et al. 2015.
Where the attention sits is ``attention_placement``:

- ``luong`` (default): on the decoder's output (Luong's global attention,
  h~ = tanh(W[c; h]), no input feeding), so teacher forcing is one fused RNN call plus one
  attention call.
- ``bahdanau`` (as d2l 10.4, "Bahdanau Attention Mechanism"): at step t the previous decoder
  hidden state (the top layer's h) is the query over the encoder outputs; the context c_t is
  concatenated with the input embedding and fed into the recurrent cell. As in d2l, the
  output layer sees only the cell's output (not the context: Bahdanau et al.'s deep output
  also reads c_t and y_{t-1}; d2l's dense layer does not). Teacher forcing is a loop over
  target steps (see ``_decode_bahdanau``).
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
    an encoder-decoder on seq2seq tasks (use_attention, heads: its decoder's attention;
    attention_placement: luong or bahdanau, see the module docstring)."""

    supports_grid = True  # patches read in raster order
    supports_padding = True  # pads are packed away
    supports_seq2seq = True

    @classmethod
    def attention_uses(cls, task: Any, params: dict[str, Any]) -> dict[str, bool] | None:
        """Only the decoder of a seq2seq task attends: over the encoder's outputs (cross,
        padded sources); not at all without use_attention or on other tasks."""
        if not getattr(task, "seq2seq", False) or not params.get("use_attention", True):
            return None
        return {"cross": True, "padding": bool(getattr(task, "pads", True))}

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
        attention_placement: Literal["luong", "bahdanau"] = "luong",
    ):
        super().__init__()
        if cell not in CELLS:
            raise ConfigError(f"model.cell={cell!r} is not one of {', '.join(CELLS)}")
        if layers < 1:
            raise ConfigError(f"model.layers={layers} must be >= 1")
        if attention_placement == "bahdanau" and not use_attention:
            raise ConfigError(
                "model.attention_placement=bahdanau places an attention, and "
                "model.use_attention=false has none; drop one of the two"
            )
        self.placement = attention_placement
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
        bahdanau = self.placement == "bahdanau" and use_attention
        self.decoder = CELLS[cell](
            2 * d if bahdanau else d,  # bahdanau: [input embedding; context]
            d,
            num_layers=layers,
            batch_first=True,
            dropout=dropout if layers > 1 else 0.0,
        )
        # initial decoder state from the mean encoder output: h (and c for an LSTM) per layer
        self.states = 2 if cell == "lstm" else 1
        self.bridge = nn.Linear(d, self.states * layers * d)
        self.attn = None
        if use_attention:
            self.attn = attention(d_model=d, heads=heads)
            if not bahdanau:
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
        recurrent state, batch-first (B, states, layers, d), so one step costs one RNN step
        (bahdanau: plus one attention query over keys/values projected once per sentence)."""
        state = cache["state"] if cache else self._initial_state(memory, src_ctx)
        hx = state.permute(1, 2, 0, 3).contiguous()  # (states, layers, B, d)
        hx = (hx[0], hx[1]) if self.states == 2 else hx[0]
        keys = None  # bahdanau: the encoder's projected keys/values, kept for the next step
        if self.placement == "bahdanau" and self.attn is not None:
            out, hx, keys = self._decode_bahdanau(y, memory, src_ctx, hx, cache)
        else:
            out, hx = self._decode_luong(y, memory, src_ctx, hx)
        new = torch.stack(hx) if self.states == 2 else hx[None]  # (states, layers, B, d)
        h = self.decoder_norm(self.drop(out))
        new_cache = {"state": new.permute(2, 0, 1, 3)}
        if keys is not None:
            new_cache["keys"] = keys
        return h, new_cache

    def _decode_luong(self, y: Tensor, memory: Tensor, src_ctx: Ctx, hx: Any) -> tuple:
        """One fused RNN call over all T steps, then one attention call on its outputs."""
        out, hx = self.decoder(self.drop(y), hx)  # (B, T, d)
        if self.attn is not None:
            ctx = Ctx(key_padding_mask=src_ctx.key_padding_mask)
            c, _ = self.attn(out, memory, memory, ctx=ctx)  # (B, T, d)
            out = torch.tanh(self.combine(torch.cat([c, out], dim=-1)))
        return out, hx

    def _decode_bahdanau(
        self, y: Tensor, memory: Tensor, src_ctx: Ctx, hx: Any, cache: dict | None
    ) -> tuple[Tensor, Any, dict | None]:
        """(outputs (B, T, d), final recurrent state, projected keys/values or None)."""
        # The encoder's keys/values are projected once per sentence and reused at every step
        # (static: all beams of a sentence share them, so beam search never reorders them).
        keys = None
        if self.attn.supports_kv_cache:
            keys = cache["keys"] if cache and "keys" in cache else {"static": True}
        ctx = Ctx(key_padding_mask=src_ctx.key_padding_mask, kv_cache=keys)
        y = self.drop(y)
        outs = []
        # A loop over target steps, not one fused RNN call: step t's query is the state the
        # cell reached at step t-1, and step t's cell input needs the context that query
        # gives, so attention and recurrence alternate; each step is still one cuDNN call.
        for t in range(y.size(1)):
            top = (hx[0] if self.states == 2 else hx)[-1]  # (B, d): the top layer's h
            c, _ = self.attn(top[:, None], memory, memory, ctx=ctx)  # (B, 1, d)
            step = torch.cat([y[:, t : t + 1], c.to(y.dtype)], dim=-1)  # (B, 1, 2d)
            out, hx = self.decoder(step, hx)  # (B, 1, d)
            outs.append(out)
        return torch.cat(outs, dim=1), hx, keys
