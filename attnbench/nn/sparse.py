"""Restricted-attention kernels shared by plugins: banded (1-D window), grid (2-D window)
and edge-list (graph) attention. Each costs O(N·w), O(N·w²) or O(E); the dense (B, h, Nq, Nk)
weights are built only when asked for.

Conventions as in :mod:`attnbench.nn.attention`: q, k, v are (B, h, N, hd); ``key_valid`` is
(B, Nk) bool, True = a real key; ``bias`` is a float score bias broadcastable to
(B, h, Nq, Nk) (a relative positional encoding's ``score_bias``) or None.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnbench.nn.attention import Attention, compute_dtype, split_heads
from attnbench.nn.ctx import Ctx
from attnbench.registry import ConfigError

MIN_BLOCK = 32  # query block size floor: tiny blocks waste time on per-block overhead


class ProjectedAttention(Attention):
    """Multi-head attention with the same fused q/k/v and output projections as ``dot``
    (same parameter names, so state dicts are interchangeable)."""

    def __init__(self, d_model: int, heads: int, dropout: float = 0.0, bias: bool = True):
        super().__init__(d_model, heads)
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=bias)  # fused q, k, v projections
        self.out = nn.Linear(d_model, d_model, bias=bias)
        self.dropout = dropout

    def heads_qkv(
        self, query: Tensor, key: Tensor, value: Tensor, ctx: Ctx
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Project and split heads: -> q, k, v each (B, h, N, hd), rotated by a relative
        positional encoding when the context carries one."""
        if query is key and key is value:  # self-attention: one matmul
            q, k, v = self.qkv(query).chunk(3, dim=-1)
        else:
            w = self.qkv.weight.chunk(3)
            b = self.qkv.bias.chunk(3) if self.qkv.bias is not None else (None, None, None)
            q, k, v = (F.linear(t, wi, bi) for t, wi, bi in zip((query, key, value), w, b))
        q, k, v = (split_heads(t, self.heads) for t in (q, k, v))  # (B, h, N, hd)
        if ctx.posenc is not None:
            q, k = ctx.posenc.rotate(q, k, ctx)
        return q, k, v

    @staticmethod
    def score_bias(ctx: Ctx, nq: int, nk: int, dtype: torch.dtype) -> Tensor | None:
        bias = ctx.posenc.score_bias(nq, nk, ctx) if ctx.posenc is not None else None
        return None if bias is None else bias.to(dtype)


def _fix_empty_rows(mask: Tensor) -> tuple[Tensor, Tensor]:
    """Rows where no key may be attended (padding queries far from any real key) would give
    NaN; let them attend to everything (finite) and return a (…, 1) keep factor to zero
    their output and weights."""
    nonempty = mask.any(dim=-1, keepdim=True)
    return mask | ~nonempty, nonempty


def _attend(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    mask: Tensor,
    bias: Tensor | None,
    dropout_p: float,
    need_weights: bool,
) -> tuple[Tensor, Tensor | None]:
    """Softmax attention over the last two dims with a boolean mask (any leading dims).

    The softmax runs in float32 for half-precision inputs; the weights meet the values in
    the values' dtype (a float32 bias or float32 probabilities, as CUDA autocast gives,
    would otherwise meet bfloat16 values)."""
    if need_weights:  # eager: the probabilities are needed anyway
        scores = (q @ k.transpose(-2, -1)) / math.sqrt(q.size(-1))
        scores = scores.to(compute_dtype(scores.dtype))
        if bias is not None:
            scores = scores + bias
        p = scores.masked_fill(~mask, float("-inf")).softmax(dim=-1).to(v.dtype)
        return F.dropout(p, dropout_p) @ v, p
    if bias is not None:  # SDPA takes a float mask in the queries' dtype
        bias = bias.to(q.dtype)
    attn_mask = mask if bias is None else bias.masked_fill(~mask, float("-inf"))
    return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p), None


# ----------------------------------------------------------------------------- 1-D window


def band_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    window: int,
    *,
    key_valid: Tensor | None = None,
    causal: bool = False,
    bias: Tensor | None = None,
    dropout_p: float = 0.0,
    need_weights: bool = False,
) -> tuple[Tensor, Tensor | None]:
    """Query i attends key j iff |i - j| <= window (and j <= i when causal).

    Queries are cut into blocks of ``bs >= window`` positions; block b attends the keys of
    [b·bs - w, (b+1)·bs + w): all blocks are one batched (bs, bs + 2w) attention problem,
    O(N·w) time and memory. When Nq < Nk (causal decoding), the queries are the last Nq
    positions and only the keys they can reach are used.
    """
    b, h, nq, hd = q.shape
    nk = k.size(2)
    if nq > nk or (nq < nk and not causal):
        raise ConfigError(
            f"windowed attention got {nq} queries for {nk} keys; it needs "
            "self-attention (equal lengths), or fewer queries only when causal"
        )
    start = max(0, nk - nq - window)  # the first key any query can reach
    if start or nq < nk:
        k, v = k[:, :, start:], v[:, :, start:]
        key_valid = key_valid[:, start:] if key_valid is not None else None
        bias = bias[..., start:] if bias is not None else None
        n = nk - start
        lead = n - nq  # dummy queries in front, so queries and keys line up
        q = F.pad(q, (0, 0, lead, 0))
        if bias is not None:
            bias = F.pad(bias, (0, 0, lead, 0))
    else:
        n, lead = nk, 0

    w = max(0, min(window, n - 1))
    bs = min(max(w, MIN_BLOCK), n)
    nb = -(-n // bs)
    length = nb * bs
    dev = q.device
    qb = F.pad(q, (0, 0, 0, length - n)).view(b, h, nb, bs, hd)  # (B, h, nb, bs, hd)

    def blocks(t: Tensor) -> Tensor:  # (B, h, n, hd) -> (B, h, nb, bs + 2w, hd), a view
        t = F.pad(t, (0, 0, w, length - n + w))
        return t.unfold(2, bs + 2 * w, bs).transpose(-1, -2)

    kb, vb = blocks(k), blocks(v)
    qpos = torch.arange(length, device=dev).view(nb, bs)  # (nb, bs)
    kpos = (torch.arange(length + 2 * w, device=dev) - w).unfold(0, bs + 2 * w, bs)
    # key minus query position is the same in every block: one (bs, bs + 2w) band pattern,
    # cut at the sequence ends (no (nb, bs, bs + 2w) integer temporaries)
    rel = torch.arange(bs + 2 * w, device=dev)[None, :] - w - torch.arange(bs, device=dev)[:, None]
    band = (rel <= 0) & (rel >= -w) if causal else rel.abs() <= w  # (bs, bs + 2w)
    mask = band & ((kpos >= 0) & (kpos < n))[:, None, :]  # (nb, bs, bs + 2w)
    keep = None
    if key_valid is not None:
        kv = F.pad(key_valid, (w, length - n + w), value=False).unfold(1, bs + 2 * w, bs)
        mask = mask[None, None] & kv[:, None, :, None, :]  # (B, 1, nb, bs, bs + 2w)
        mask, keep = _fix_empty_rows(mask)
    bb = None
    if bias is not None:  # pick the band out of the dense bias
        qi, ki = qpos.clamp(max=n - 1), kpos.clamp(0, n - 1)
        bb = bias[..., qi[:, :, None], ki[:, None, :]]  # (B|1, h|1, nb, bs, bs + 2w)

    y, p = _attend(qb, kb, vb, mask, bb, dropout_p, need_weights)  # (B, h, nb, bs, hd)
    if keep is not None:
        y = y * keep
    y = y.reshape(b, h, length, hd)[:, :, lead:n]  # (B, h, Nq, hd)
    if p is None:
        return y, None
    if keep is not None:
        p = p * keep
    # scatter the band into dense (B, h, L, L + 2w) rows; key j sits at column j + w
    idx = (kpos + w)[:, None, :].expand(b, h, nb, bs, bs + 2 * w)
    dense = p.new_zeros(b, h, nb, bs, length + 2 * w).scatter(-1, idx, p)
    dense = dense.view(b, h, length, length + 2 * w)[:, :, lead:n, w : w + n]
    return y, F.pad(dense, (start, 0))  # (B, h, Nq, Nk)


# ----------------------------------------------------------------------------- 2-D window


def grid_neighbours(
    positions: Tensor, window: int, key_valid: Tensor | None
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Neighbourhoods on a 2-D grid, from token positions (B, N, 2) (row, col).

    Returns ``idx, valid`` (B, N, K): the indices of the tokens within Chebyshev distance
    ``window`` (K = (2w+1)²) and which of them exist and are real keys; and ``gidx, goff``
    (B, G): the indices of the off-grid tokens (a negative coordinate, e.g. a CLS token at
    (-1, -1); goff is False for filler slots), which are global: they see every token and
    every token sees them.
    """
    if positions.is_floating_point():
        positions = positions.round()
    pos = positions.long()
    b, n, _ = pos.shape
    dev = pos.device
    off = (pos < 0).any(-1)  # (B, N) global tokens
    real = ~off if key_valid is None else ~off & key_valid
    rows = int(pos[..., 0].max().clamp(min=0)) + 1 if n else 1
    cols = int(pos[..., 1].max().clamp(min=0)) + 1 if n else 1
    spare = rows * cols  # padding and off-grid tokens are parked in a spare cell
    cell = (pos[..., 0] * cols + pos[..., 1]).masked_fill(~real, spare)  # (B, N)
    grid = torch.full((b, spare + 1), -1, dtype=torch.long, device=dev)
    grid.scatter_(1, cell, torch.arange(n, device=dev).expand(b, n))
    grid[:, spare] = -1
    offs = torch.arange(-window, window + 1, device=dev)
    dr, dc = offs.repeat_interleave(offs.numel()), offs.repeat(offs.numel())  # (K,)
    nr, nc = pos[..., :1] + dr, pos[..., 1:] + dc  # (B, N, K)
    inside = (nr >= 0) & (nr < rows) & (nc >= 0) & (nc < cols)
    where = torch.where(inside, nr * cols + nc, spare)
    nbr = grid.gather(1, where.view(b, -1)).view(b, n, -1)  # (B, N, K), -1 = no token
    g = int(off.sum(1).max()) if n else 0
    gidx = off.long().argsort(dim=1, descending=True, stable=True)[:, :g]  # (B, G)
    return nbr.clamp(min=0), nbr >= 0, gidx, off.gather(1, gidx)


def grid_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    positions: Tensor,
    window: int,
    *,
    key_valid: Tensor | None = None,
    causal: bool = False,
    bias: Tensor | None = None,
    dropout_p: float = 0.0,
    need_weights: bool = False,
) -> tuple[Tensor, Tensor | None]:
    """Each token attends the tokens within Chebyshev distance ``window`` on the grid
    (a CNN-like receptive field) plus the off-grid (global) tokens; global tokens attend
    everything. Causal keeps keys at token index <= the query's. Gather-based:
    O(N·((2w+1)² + G)) time and memory."""
    b, h, n, hd = q.shape
    if k.size(2) != n:
        raise ConfigError(
            "2-D windowed attention needs self-attention (as many keys as "
            "queries, all at ctx.positions)"
        )
    idx, valid, gidx, goff = grid_neighbours(positions, window, key_valid)  # (B, N, K)
    g = gidx.size(1)
    gvalid = goff if key_valid is None else goff & key_valid.gather(1, gidx)  # (B, G)
    if g:  # every token also sees the global tokens
        idx = torch.cat([idx, gidx[:, None].expand(b, n, g)], dim=-1)
        valid = torch.cat([valid, gvalid[:, None].expand(b, n, g)], dim=-1)
    ar = torch.arange(n, device=q.device)
    if causal:
        valid = valid & (idx <= ar[:, None])
    valid, keep = _fix_empty_rows(valid)
    kk = idx.size(-1)
    gather = idx.view(b, 1, n * kk, 1).expand(b, h, n * kk, hd)
    kg = k.gather(2, gather).view(b, h, n, kk, hd)  # (B, h, N, K, hd)
    vg = v.gather(2, gather).view(b, h, n, kk, hd)
    bg = None
    if bias is not None:
        bias = bias.expand(b, -1, n, n)
        bg = bias.gather(-1, idx[:, None].expand(b, bias.size(1), n, kk)).unsqueeze(-2)
    mask = valid[:, None, :, None, :]  # (B, 1, N, 1, K)
    y, p = _attend(q.unsqueeze(-2), kg, vg, mask, bg, dropout_p, need_weights)
    y = y.squeeze(-2) * keep[:, None]  # (B, h, N, hd)
    dense = None
    if p is not None:
        p = p.squeeze(-2) * keep[:, None]  # (B, h, N, K)
        dense = p.new_zeros(b, h, n, n).scatter_add(-1, idx[:, None].expand(b, h, n, kk), p)
    if not g:
        return y, dense
    # global queries: dense rows over all N keys, O(G·N)
    grow = gidx[:, None, :, None]  # (B, 1, G, 1)
    qg = q.gather(2, grow.expand(b, h, g, hd))  # (B, h, G, hd)
    gmask = torch.ones(b, g, n, dtype=torch.bool, device=q.device)
    if key_valid is not None:
        gmask = gmask & key_valid[:, None, :]
    if causal:
        gmask = gmask & (ar <= gidx[..., None])
    gmask, gkeep = _fix_empty_rows(gmask)
    gb = bias.gather(-2, grow.expand(b, bias.size(1), g, n)) if bias is not None else None
    yg, pg = _attend(qg, k, v, gmask[:, None], gb, dropout_p, need_weights)  # (B, h, G, hd)
    use = goff[:, None, :, None] & gkeep[:, None]  # (B, 1, G, 1): a global token's row
    yg = torch.where(use, yg, y.gather(2, grow.expand(b, h, g, hd)))
    y = y.scatter(2, grow.expand(b, h, g, hd), yg)
    if dense is not None:
        rows_g = dense.gather(2, grow.expand(b, h, g, n))
        dense = dense.scatter(2, grow.expand(b, h, g, n), torch.where(use, pg, rows_g))
    return y, dense


# ----------------------------------------------------------------------------- edges


def segment_softmax(scores: Tensor, seg: Tensor, segments: int) -> Tensor:
    """Softmax of scores (E, h) within the groups given by seg (E,) in [0, segments).

    Half-precision scores are normalised in float32 and returned in their own dtype."""
    dtype = scores.dtype
    scores = scores.to(compute_dtype(dtype))
    h = scores.size(1)
    index = seg[:, None].expand(-1, h)
    # the max only stabilises exp(); softmax does not depend on it, so no gradient through it
    amax = scores.new_full((segments, h), float("-inf"))
    amax = amax.scatter_reduce(0, index, scores.detach(), "amax", include_self=True)
    ex = (scores - amax[seg]).exp()  # (E, h)
    denom = ex.new_zeros(segments, h).index_add(0, seg, ex)
    return (ex / denom[seg]).to(dtype)


def edge_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    edges: Tensor,
    *,
    key_valid: Tensor | None = None,
    causal: bool = False,
    self_loops: bool = True,
    bias: Tensor | None = None,
    dropout_p: float = 0.0,
    need_weights: bool = False,
) -> tuple[Tensor, Tensor | None]:
    """Node i attends node j for each edge (i, j) in edges (2, E) [query node, key node],
    flat indices b·N + i. O(E): per-edge scores, segment softmax, scattered sum of values.
    Nodes without a usable edge get a zero output."""
    b, h, n, hd = q.shape
    if k.size(2) != n:
        raise ConfigError(
            "graph attention needs self-attention over the graph's nodes "
            f"(got {n} queries for {k.size(2)} keys)"
        )
    if edges.dim() != 2 or edges.size(0) != 2:
        raise ConfigError(
            f"ctx.edges must be (2, E) [query node, key node], got shape {tuple(edges.shape)}"
        )
    dst, src = edges.to(q.device).long()
    keep = torch.ones_like(dst, dtype=torch.bool)
    if self_loops:  # drop given loops, then add exactly one per node
        keep = dst != src
    if key_valid is not None:
        keep = keep & key_valid.reshape(-1)[src]
    if causal:
        keep = keep & (src % n <= dst % n)
    dst, src = dst[keep], src[keep]
    if self_loops:
        loops = torch.arange(b * n, device=q.device)
        if key_valid is not None:
            loops = loops[key_valid.reshape(-1)]
        dst, src = torch.cat([dst, loops]), torch.cat([src, loops])
    qf, kf, vf = (t.transpose(1, 2).reshape(b * n, h, hd) for t in (q, k, v))  # (BN, h, hd)
    # scores, softmax and the sums over edges in float32 for half-precision inputs; index_add
    # needs one dtype on both sides (on CUDA, exp() hands float32 to the bfloat16 values)
    prod = qf[dst] * kf[src]  # (E, h, hd)
    scores = prod.sum(-1, dtype=compute_dtype(prod.dtype)) / math.sqrt(hd)  # (E, h)
    if bias is not None:
        bias = bias.expand(b, h, n, n)
        scores = scores + bias[dst // n, :, dst % n, src % n]
    p = segment_softmax(scores, dst, b * n)  # (E, h)
    msg = F.dropout(p, dropout_p)[..., None] * vf[src]  # (E, h, hd), the wider dtype
    y = msg.new_zeros(b * n, h, hd).index_add(0, dst, msg).to(v.dtype)
    y = y.view(b, n, h, hd).transpose(1, 2)  # (B, h, N, hd)
    if not need_weights:
        return y, None
    dense = p.new_zeros(b * n, n, h).index_put((dst, src % n), p, accumulate=True)
    return y, dense.to(v.dtype).view(b, n, n, h).permute(0, 3, 1, 2)  # (B, h, N, N)
