"""Transformer building blocks reused by backbones."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from attnbench.nn.ctx import Ctx
from attnbench.registry import ConfigError

NORMS = ("pre", "post")


class FeedForward(nn.Sequential):
    def __init__(self, d_model: int, ff_mult: int, dropout: float):
        super().__init__(
            nn.Linear(d_model, ff_mult * d_model),
            nn.GELU(),
            nn.Linear(ff_mult * d_model, d_model),
            nn.Dropout(dropout),
        )


class EncoderBlock(nn.Module):
    """Self-attention + feed-forward, each with a residual and LayerNorm (pre or post)."""

    def __init__(
        self,
        d_model: int,
        attention: nn.Module,
        ff_mult: int = 4,
        dropout: float = 0.1,
        norm: str = "pre",
    ):
        super().__init__()
        if norm not in NORMS:
            raise ConfigError(f"model.norm={norm!r} is not one of {', '.join(NORMS)}")
        self.pre_norm = norm == "pre"
        self.attn = attention
        self.ff = FeedForward(d_model, ff_mult, dropout)
        self.norm1, self.norm2 = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.drop = nn.Dropout(dropout)

    def _attend(self, x: Tensor, ctx: Ctx) -> Tensor:
        out, _ = self.attn(x, x, x, ctx=ctx)
        return self.drop(out)

    def forward(self, x: Tensor, ctx: Ctx) -> Tensor:
        if self.pre_norm:
            h = self.norm1(x)
            x = x + self._attend(h, ctx)
            return x + self.ff(self.norm2(x))
        x = self.norm1(x + self._attend(x, ctx))
        return self.norm2(x + self.ff(x))


class DecoderBlock(nn.Module):
    """Causal self-attention, cross-attention over the encoder memory, feed-forward; each
    with a residual and LayerNorm (pre or post).

    Incremental decoding (``past``): a step runs only the new query rows through the block.
    Plugins that ``supports_kv_cache`` keep their projected keys/values in ``past`` (cross-
    attention's projected once from the memory); for the others the block keeps the
    self-attention *inputs* so far, which the plugin re-projects each step.
    """

    def __init__(
        self,
        d_model: int,
        self_attention: nn.Module,
        cross_attention: nn.Module,
        ff_mult: int = 4,
        dropout: float = 0.1,
        norm: str = "pre",
    ):
        super().__init__()
        if norm not in NORMS:
            raise ConfigError(f"model.norm={norm!r} is not one of {', '.join(NORMS)}")
        self.pre_norm = norm == "pre"
        self.self_attn, self.cross_attn = self_attention, cross_attention
        self.ff = FeedForward(d_model, ff_mult, dropout)
        self.norm1, self.norm2, self.norm3 = (nn.LayerNorm(d_model) for _ in range(3))
        self.drop = nn.Dropout(dropout)

    def forward(
        self, x: Tensor, memory: Tensor, self_ctx: Ctx, cross_ctx: Ctx, past: dict | None = None
    ) -> tuple[Tensor, dict]:
        """x (B, T, d) new positions, memory (B, S, d), past: the state returned by the
        previous step or None -> (out (B, T, d), state including these T positions)."""
        # a new state each step (shallow: tensors are shared), the caller's stays valid
        state = (
            {k: dict(v) if isinstance(v, dict) else v for k, v in past.items()}
            if past
            else self.empty_state()
        )
        h = self.norm1(x) if self.pre_norm else x
        if "inputs" in state:
            kv = h if state["inputs"] is None else torch.cat([state["inputs"], h], dim=1)
            state["inputs"] = kv  # (B, t+T, d)
            a, _ = self.self_attn(h, kv, kv, ctx=self_ctx)  # queries are the last T positions
        else:
            a, _ = self.self_attn(h, h, h, ctx=self_ctx.replace(kv_cache=state["self"]))
        cross_ctx = cross_ctx.replace(kv_cache=state["cross"])
        if self.pre_norm:
            x = x + self.drop(a)
            c, _ = self.cross_attn(self.norm2(x), memory, memory, ctx=cross_ctx)
            x = x + self.drop(c)
            return x + self.ff(self.norm3(x)), state
        x = self.norm1(x + self.drop(a))
        c, _ = self.cross_attn(x, memory, memory, ctx=cross_ctx)
        x = self.norm2(x + self.drop(c))
        return self.norm3(x + self.ff(x)), state

    def empty_state(self) -> dict:
        cached = self.self_attn.supports_kv_cache
        return {
            **({"self": {}} if cached else {"inputs": None}),
            "cross": {"static": True} if self.cross_attn.supports_kv_cache else None,
        }
