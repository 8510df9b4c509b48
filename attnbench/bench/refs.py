"""The references every variant is measured next to, behind the same q/k/v/out projections:

  proj_ref         the attention step removed (q + k + v keeps every projection in the
                   backward pass): the floor no attention variant can go below
  sdpa_ref         bare F.scaled_dot_product_attention
  dense_ref        softmax(q·kᵀ/√d)·v with the (B, h, N, N) scores materialised: what exact
                   attention costs without a fused kernel
  graph_dense_ref  graph attention through a dense boolean (B, 1, N, N) mask + SDPA

and the random graph that variants needing one run on (random_edges).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnbench.nn.attention import merge_heads, split_heads
from attnbench.nn.ctx import Ctx


class SdpaRef(nn.Module):
    """The floor for exact attention: projections + one fused SDPA call, nothing else."""

    needs_graph = False  # as an Attention plugin declares it: whether ctx.edges is needed
    work = "dense"  # the (query, key) pairs its attention step visits: see flops.WORK

    def __init__(self, d_model: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out = nn.Linear(d_model, d_model)

    def mask(self, ctx: Ctx, b: int, n: int, device: torch.device) -> Tensor | None:
        return None

    def forward(
        self, query: Tensor, key: Tensor, value: Tensor, *, ctx: Ctx, need_weights: bool = False
    ) -> tuple[Tensor, None]:
        q, k, v = (split_heads(t, self.heads) for t in self.qkv(query).chunk(3, dim=-1))
        y = self.attend(q, k, v, self.mask(ctx, q.size(0), q.size(2), q.device))
        return self.out(merge_heads(y)), None  # y: (B, h, N, hd)

    def attend(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None) -> Tensor:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


class ProjRef(SdpaRef):
    """The floor for every variant: the same projections, no attention step at all."""

    work = "projections"  # no attention step: only the projections count

    def attend(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None) -> Tensor:
        return q + k + v  # O(N·d); using q and k keeps their projections in the backward pass


class DenseRef(SdpaRef):
    """Exact attention with the N×N scores and weights stored (the eager formulation)."""

    def attend(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None) -> Tensor:
        scores = (q @ k.transpose(-2, -1)) / math.sqrt(q.size(-1))  # (B, h, N, N)
        return scores.softmax(dim=-1) @ v


class GraphDenseRef(SdpaRef):
    """Graph attention the O(N²) way: the edge list scattered into a dense boolean mask."""

    needs_graph = True
    work = "edges"  # the useful work is the edges, whatever the dense kernel computes

    def mask(self, ctx: Ctx, b: int, n: int, device: torch.device) -> Tensor:
        mask = torch.zeros(b * n, n, dtype=torch.bool, device=device)
        dst, src = ctx.edges
        mask[dst, src % n] = True
        mask.view(b, n, n).diagonal(dim1=1, dim2=2).fill_(True)  # self-loops, as graph adds
        return mask.view(b, 1, n, n)


REFERENCES: dict[str, type[SdpaRef]] = {
    "proj_ref": ProjRef,
    "sdpa_ref": SdpaRef,
    "dense_ref": DenseRef,
    "graph_dense_ref": GraphDenseRef,
}


def random_edges(
    b: int, n: int, degree: int, device: torch.device, generator: torch.Generator
) -> Tensor:
    """(2, E) long: each node attends ``degree`` random nodes of its own sample (unique)."""
    dst = torch.arange(b * n).repeat_interleave(degree)
    src = (dst // n) * n + torch.randint(0, n, dst.shape, generator=generator)
    flat = torch.unique(dst * (b * n) + src)
    return torch.stack([flat // (b * n), flat % (b * n)]).to(device)
