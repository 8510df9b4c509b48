"""The backbone (``model``) contract: ``forward(x, ctx) -> x`` over (B, N, d_model).

Like attention plugins, a backbone serves only the kinds of task it declares (fail closed):
graph tasks (no token order), 2-D patch grids, padded batches, sequence-to-sequence tasks
(which need :meth:`encode` / :meth:`decode`). :meth:`check_task` refuses the rest with one
line before training, naming the backbones that would serve.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from attnbench import registry
from attnbench.nn.ctx import Ctx
from attnbench.registry import ConfigError

# capability flag -> (the task attribute that asks for it, the use in a refusal's words)
TASK_NEEDS = {
    "supports_graph": ("gives_edges", "a graph task (nodes have no order; ctx.edges)"),
    "supports_grid": ("grid", "a 2-D patch grid (ctx.positions (B, N, 2))"),
    "supports_padding": ("pads", "padded batches (ctx.key_padding_mask)"),
    "supports_seq2seq": ("seq2seq", "a sequence-to-sequence task (encode/decode)"),
    "supports_attention_pooling": (
        "needs_attention",
        "a task that pools with the backbone's attention layer (task=regression)",
    ),
}


class Backbone(nn.Module):
    """Base class of model plugins. Set ``self.d_model`` (the width the task's embedder and
    head are built for) and declare the tasks the backbone serves.

    Parameters named ``attention``, ``posenc`` and ``task`` in the constructor are supplied
    by the harness (factories for the selected plugins, and the task itself).
    """

    supports_graph = False  # reads no token order, so node sets are fine (graph tasks)
    supports_grid = False  # takes image patches on a 2-D grid
    supports_padding = False  # real positions' outputs ignore padded positions
    supports_seq2seq = False  # has encode(x, ctx) and decode(y, memory, src_ctx, cache)
    supports_attention_pooling = False  # its attention plugin may be driven by the task
    d_model: int

    def forward(self, x: Tensor, ctx: Ctx) -> Tensor:
        """(B, N, d) -> (B, N, d)"""
        raise NotImplementedError

    def encode(self, x: Tensor, ctx: Ctx) -> Tensor:
        """Source (B, S, d) -> memory (B, S, d) (sequence-to-sequence backbones)."""
        raise NotImplementedError

    def decode(
        self, y: Tensor, memory: Tensor, src_ctx: Ctx, cache: dict | None = None
    ) -> tuple[Tensor, dict]:
        """Target embeddings (B, T, d) -> (h (B, T, d), cache for the next step)."""
        raise NotImplementedError

    @classmethod
    def attention_uses(cls, task: Any, params: dict[str, Any]) -> dict[str, bool] | None:
        """How the selected attention plugin will be used on this task (keyword arguments of
        :meth:`attnbench.nn.attention.Attention.check_use`), or None when it will not be used
        at all; checked before the data loads. The default: as a transformer uses it."""
        return dict(  # keyword names, as check_use takes them
            graph=bool(getattr(task, "gives_edges", False)),
            padding=bool(getattr(task, "pads", True)),
            causal=bool(getattr(task, "seq2seq", False)),
            cross=bool(getattr(task, "seq2seq", False) or getattr(task, "needs_attention", 0)),
        )

    @classmethod
    def check_task(cls, task: Any) -> None:
        """Raise a one-line error when this backbone cannot serve the task."""
        name = getattr(cls, "plugin_name", cls.__name__)
        for flag, (needs, use) in TASK_NEEDS.items():
            if getattr(task, needs, False) and not getattr(cls, flag):
                able = ", ".join(p.name for p in registry.plugins("model") if getattr(p.cls, flag))
                raise ConfigError(
                    f"model {name!r} does not declare {flag}, so it cannot serve {use}; "
                    f"models that can: {able}"
                )
