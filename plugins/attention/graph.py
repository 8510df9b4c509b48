"""Graph attention over an edge list: each node attends only its neighbours (ctx.edges)."""

from __future__ import annotations

from torch import Tensor

from attnbench import register
from attnbench.nn.attention import merge_heads
from attnbench.nn.ctx import Ctx
from attnbench.nn.sparse import ProjectedAttention, edge_attention
from attnbench.registry import ConfigError


@register("attention", "graph")
class GraphAttention(ProjectedAttention):
    """Dot-product attention along graph edges only; O(E) gather / segment softmax."""

    supports_causal = True
    supports_padding = True
    supports_relative_posenc = True
    needs_graph = True

    def __init__(
        self,
        d_model: int,
        heads: int,
        self_loops: bool = True,
        dropout: float = 0.0,
        bias: bool = True,
    ):
        super().__init__(d_model, heads, dropout, bias)
        self.self_loops = self_loops

    def forward(
        self,
        query: Tensor,
        key: Tensor,
        value: Tensor,
        *,
        ctx: Ctx | None = None,
        need_weights: bool = False,
    ) -> tuple[Tensor, Tensor | None]:
        ctx = ctx or Ctx()
        if ctx.edges is None:
            raise ConfigError(
                "attention=graph needs graph edges (ctx.edges) and this batch "
                "has none; use it with a task that provides them (task=graph)"
            )
        q, k, v = self.heads_qkv(query, key, value, ctx)  # (B, h, N, hd)
        bias = self.score_bias(ctx, q.size(-2), k.size(-2), q.dtype)
        y, weights = edge_attention(
            q,
            k,
            v,
            ctx.edges,
            key_valid=ctx.key_padding_mask,
            causal=ctx.causal,
            self_loops=self.self_loops,
            bias=bias,
            dropout_p=self.dropout if self.training else 0.0,
            need_weights=need_weights,
        )
        return self.out(merge_heads(y)), weights
