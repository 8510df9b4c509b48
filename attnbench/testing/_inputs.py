"""The checker's inputs: seeded float64 tensors, padding masks and small random graphs.
Each input has its own generator, so building one never moves the global random state."""

from __future__ import annotations

import torch
from torch import Tensor

from attnbench.testing._core import B, N


def randn(*shape: int, seed: int) -> Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def pad_to(x: Tensor, n: int) -> Tensor:
    """(B, N, d) -> (B, n, d), zeros appended."""
    return torch.nn.functional.pad(x, (0, 0, 0, n - x.size(1)))


def lengths_mask(lengths: list[int], n: int) -> Tensor:
    """(B, n) True for the first lengths[b] positions."""
    return torch.arange(n)[None, :] < torch.tensor(lengths)[:, None]


def local_edges(n: int, seed: int) -> Tensor:
    """(2, E) [query node, key node] within one graph of n nodes: every self-loop, every
    node to node 0 (each row keeps a key no probe blocks), and random edges."""
    g = torch.Generator().manual_seed(seed)
    nodes = torch.arange(n)
    rand = (torch.rand(n, n, generator=g) < 0.4).nonzero().T  # (2, ·)
    edges = torch.cat([torch.stack([nodes, nodes]), torch.stack([nodes, 0 * nodes]), rand], 1)
    return edges.unique(dim=1)


def random_graphs(n: int = N, b: int = B, seed: int = 2) -> list[Tensor]:
    """One graph of n nodes per batch element, as local (2, E) edges."""
    return [local_edges(n, seed + i) for i in range(b)]


def flat_edges(per_graph: list[Tensor], n: int) -> Tensor:
    """Per-graph local edges -> the batch's flat (2, E) indices b·n + i."""
    return torch.cat([e + b * n for b, e in enumerate(per_graph)], dim=1)


def edge_mask(per_graph: list[Tensor], n: int) -> Tensor:
    """(B, 1, n, n) True where an edge lets query i attend key j."""
    mask = torch.zeros(len(per_graph), 1, n, n, dtype=torch.bool)
    for b, (dst, src) in enumerate(per_graph):
        mask[b, 0, dst, src] = True
    return mask
