"""Recurrent backbone: stacked LSTM or GRU (cuDNN / fused kernels via nn.LSTM / nn.GRU)."""

from __future__ import annotations

from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from attnbench import register
from attnbench.nn.ctx import Ctx
from attnbench.registry import ConfigError

CELLS = {"lstm": nn.LSTM, "gru": nn.GRU}


@register("model", "rnn")
class RNN(nn.Module):
    """LSTM/GRU, uni- or bidirectional, hidden = d_model per direction, projected to d_model."""

    def __init__(self, d_model: int = 128, cell: str = "lstm", bidirectional: bool = True,
                 layers: int = 2, dropout: float = 0.1):
        super().__init__()
        if cell not in CELLS:
            raise ConfigError(f"model.cell={cell!r} is not one of {', '.join(CELLS)}")
        if layers < 1:
            raise ConfigError(f"model.layers={layers} must be >= 1")
        self.d_model, self.bidirectional = d_model, bidirectional
        self.drop = nn.Dropout(dropout)
        # nn.LSTM's dropout acts between layers only (it warns when layers == 1).
        self.rnn = CELLS[cell](d_model, d_model, num_layers=layers, batch_first=True,
                               bidirectional=bidirectional,
                               dropout=dropout if layers > 1 else 0.0)
        directions = 2 if bidirectional else 1
        self.proj = nn.Linear(directions * d_model, d_model) if bidirectional else nn.Identity()
        self.norm = nn.LayerNorm(d_model)

    @classmethod
    def check_task(cls, task) -> None:
        if task.gives_edges:
            raise ConfigError("model=rnn reads tokens in order, which a graph task does not "
                              "have; use model=transformer (attention=graph) or model=mlp")

    def forward(self, x: Tensor, ctx: Ctx) -> Tensor:
        """(B, N, d) -> (B, N, d); pads are packed away, so they never reach a real token."""
        if ctx.causal and self.bidirectional:
            raise ConfigError("model=rnn with model.bidirectional=true sees the future, which a "
                              "causal task forbids; set model.bidirectional=false")
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
