"""One capture mechanism for the attention weights of any model, with no per-plugin code.

Every attention plugin subclasses :class:`attnbench.nn.attention.Attention` and returns its
weights (B, heads, Nq, Nk) when called with ``need_weights=True``; restricted variants
(truncated, graph) return them dense, with zeros outside their restriction. ``capture``
hooks each Attention module of a model: a forward pre-hook asks for the weights, a forward
hook records them with the module's path, its call number and the ``ctx`` it was called
with (padding, positions, edges). A module called several times (a decoder generating step
by step) gets one record per call; the maps capture one teacher-forced pass instead, and
join the calls of a decoder that attends once per target step even then (Bahdanau's).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from attnbench.nn.attention import Attention
from attnbench.nn.ctx import Ctx


@dataclass
class Record:
    """One call of one attention module."""

    path: str  # the module's path in the captured model, e.g. "backbone.blocks.0.attn"
    call: int  # how many times this module ran before, in this capture
    weights: Tensor  # (B, heads, Nq, Nk) float32 on the CPU, detached
    cross: bool  # keys come from another sequence (cross-attention), not the queries'
    ctx: Ctx | None  # what the batch told the module (key padding, positions, edges)


@dataclass
class Capture:
    """What a ``with capture(model)`` block saw: its records in call order."""

    modules: list[str]  # the attention modules' paths, in module order (= depth order)
    records: list[Record] = field(default_factory=list)

    def of(self, path: str) -> list[Record]:
        return [r for r in self.records if r.path == path]

    def layers(self, *, cross: bool) -> list[Record]:
        """The first call of each self- (or cross-) attention module, in module order: one
        record per layer for a single forward pass."""
        first = {}
        for r in self.records:
            if r.cross == cross and r.path not in first:
                first[r.path] = r
        return [first[p] for p in self.modules if p in first]

    def joined(self, *, cross: bool) -> list[Record]:
        """Like :meth:`layers`, but each module's calls joined along the query axis, in call
        order: one record per layer for a single forward pass whose decoder attends once per
        target step (model=rnn with Bahdanau's placement: T calls of one query each give one
        (B, h, T, Nk) record). A module called once is its one record, unchanged."""
        out = []
        for first in self.layers(cross=cross):
            calls = [r for r in self.records if r.path == first.path]
            if len(calls) == 1:
                out.append(first)
                continue
            keys = {tuple(r.weights.shape[:2]) + tuple(r.weights.shape[3:]) for r in calls}
            if len(keys) != 1:  # a growing key cache: the calls are steps of a generation
                raise ValueError(
                    f"{first.path}: its {len(calls)} calls attend over different keys "
                    f"({sorted(keys)}); capture one teacher-forced pass to join them"
                )
            weights = torch.cat([r.weights for r in calls], dim=2)  # (B, h, sum Nq, Nk)
            out.append(Record(first.path, 0, weights, first.cross, first.ctx))
        return out


def attention_modules(model: nn.Module) -> list[tuple[str, Attention]]:
    """(path, module) of every attention plugin instance in the model, in module order."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, Attention)]


def _is_cross(args: tuple, kwargs: dict[str, Any], ctx: Ctx | None) -> bool:
    """Self-attention is called with its queries as keys (``attn(x, x, x)``); a decoder
    step's causal self-attention gets earlier inputs as keys, which is still self."""
    query = args[0] if args else kwargs.get("query")
    key = args[1] if len(args) > 1 else kwargs.get("key")
    return query is not key and not (ctx is not None and ctx.causal)


@contextmanager
def capture(
    model: nn.Module, on_record: Callable[[Record], None] | None = None
) -> Iterator[Capture]:
    """Record the attention weights of every attention module of ``model`` while the block
    runs. With ``on_record`` each record is handed to it instead of kept (statistics over
    a whole split in constant memory). Hooks are removed on exit, even after an error."""
    found = attention_modules(model)
    result = Capture(modules=[path for path, _ in found])
    calls: dict[str, int] = {}

    def hooks_for(path: str):
        def ask_weights(module, args, kwargs):
            return args, {**kwargs, "need_weights": True}

        def record(module, args, kwargs, output):
            weights = output[1] if isinstance(output, tuple) and len(output) > 1 else None
            if weights is None:  # a plugin that ignores need_weights: nothing to show
                return
            ctx = kwargs.get("ctx")
            rec = Record(
                path=path,
                call=calls.get(path, 0),
                weights=weights.detach().float().cpu(),
                cross=_is_cross(args, kwargs, ctx),
                ctx=ctx,
            )
            calls[path] = rec.call + 1
            if on_record is None:
                result.records.append(rec)
            else:
                on_record(rec)

        return ask_weights, record

    handles = []
    try:
        for path, module in found:
            ask_weights, record = hooks_for(path)
            handles.append(module.register_forward_pre_hook(ask_weights, with_kwargs=True))
            handles.append(module.register_forward_hook(record, with_kwargs=True))
        yield result
    finally:
        for handle in handles:
            handle.remove()
