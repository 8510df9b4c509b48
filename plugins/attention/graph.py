"""Graph attention over an edge list: each node attends only its neighbours (ctx.edges).

``kernel``: auto (default) runs FlexAttention over the graph's adjacency tiles where that
is available and cheaper than the edge kernel (CUDA, graphs whose node order keeps
neighbours in few tiles); the O(E) edge kernel elsewhere; flex or native force one."""

from __future__ import annotations

from typing import Literal

from torch import Tensor

from attnbench import register
from attnbench.nn.attention import merge_heads
from attnbench.nn.ctx import Ctx
from attnbench.nn.flex import attend, check_kernel, graph_flex
from attnbench.nn.sparse import ProjectedAttention, edge_attention
from attnbench.registry import ConfigError


@register("attention", "graph")
class GraphAttention(ProjectedAttention):
    """Dot-product attention along graph edges only: FlexAttention over adjacency tiles, or
    the O(E) gather / segment softmax."""

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
        kernel: Literal["auto", "flex", "native"] = "auto",
    ):
        super().__init__(d_model, heads, dropout, bias)
        self.self_loops = self_loops
        self.kernel = check_kernel(kernel)

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
        dropout_p = self.dropout if self.training else 0.0
        kw = dict(key_valid=ctx.key_padding_mask, causal=ctx.causal, self_loops=self.self_loops)

        def flex() -> Tensor | None:  # (B, h, N, hd), None: the graph does not fit flex
            return graph_flex(q, k, v, ctx.edges, kernel=self.kernel, **kw)

        def native() -> tuple[Tensor, Tensor | None]:
            more = dict(bias=bias, dropout_p=dropout_p, need_weights=need_weights)
            return edge_attention(q, k, v, ctx.edges, **kw, **more)

        call = dict(need_weights=need_weights, dropout_p=dropout_p, bias=bias)
        y, weights = attend(self.kernel, flex, native, q, k, v, **call)
        return self.out(merge_heads(y)), weights
