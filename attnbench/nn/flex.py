"""FlexAttention (``torch.nn.attention.flex_attention``) kernels for restricted attention:
a 1-D window, a 2-D window over grid positions, and graph edges. Block-sparse: only the
(query block, key block) tiles that hold an allowed pair are computed, at flash-attention
memory (no (N, N) scores), forward and backward on CUDA.

Each kernel computes exactly what its counterpart in :mod:`attnbench.nn.sparse` computes
(``band_attention``, ``grid_attention``, ``edge_attention``) for the calls FlexAttention can
serve: no weights asked for, no attention dropout, no score bias, as many queries as keys.
:func:`flex_problem` names what stops a call; :func:`use_flex` is the per-call choice the
plugins make (their ``kernel`` parameter: auto, flex or native).

Structure and padding are split: the block mask holds the structure only (window, grid,
edges, causality) and is built once per (shape, structure, device) and cached
(:data:`MASKS`); key padding changes every batch, so it is applied by a ``score_mod``
(-inf on padded keys) instead of rebuilding the mask. A query with no allowed key gets a
zero output, as in the native kernels.

Shapes: q, k, v (B, h, N, hd); key_valid (B, N) bool, True = a real key.
"""

from __future__ import annotations

import functools
import shutil
import warnings
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from attnbench.registry import ConfigError, one_line

try:
    from torch.nn.attention.flex_attention import BlockMask, flex_attention

    FLEX_MISSING: str | None = None
except ImportError as e:  # torch < 2.5
    BlockMask = flex_attention = None  # type: ignore[assignment,misc]
    FLEX_MISSING = f"torch {torch.__version__} has no FlexAttention (torch >= 2.5 has): {e}"

KERNELS = ("auto", "flex", "native")  # the plugins' `kernel` parameter
BLOCK = 128  # FlexAttention's tile (query and key block) size
# auto on CUDA: below this length the native kernels' few small matmuls are cheaper than a
# block-sparse launch (one tile covers everything anyway)
MIN_FLEX_N = 2 * BLOCK
# auto for graphs: flex computes every score of a visited (BLOCK, BLOCK) tile on tensor
# cores (~hd·10 flops per score, fwd+bwd), the edge kernel moves (h, hd) rows per edge
# through memory several times (gathers, (E, h, hd) products, scatter-adds). An H200
# estimate puts the break-even at a few hundred scores per edge; flex is chosen up to this
# many (a banded graph of degree 8: ~40; a random one at N = 32768: ~3,600, edge kernel).
# An estimate, not a measurement: to be confirmed on a GPU (banded vs random edges).
GRAPH_MAX_SCORES_PER_EDGE = 128


def check_kernel(kernel: str) -> str:
    """Validate a plugin's ``kernel`` parameter (one-line error naming the allowed values)."""
    if kernel not in KERNELS:
        raise ConfigError(
            f"attention.kernel={kernel!r} is not one of {', '.join(KERNELS)} (auto: FlexAttention "
            "where it is available and faster, native: attnbench's own kernels)"
        )
    if kernel == "flex" and FLEX_MISSING:
        raise ConfigError(f"attention.kernel=flex: {FLEX_MISSING}; use attention.kernel=auto")
    return kernel


# ----------------------------------------------------------------------------- the choice

_BROKEN: dict[str, str] = {}  # device type -> why compiling FlexAttention failed there
_WARNED: set[str] = set()


def flex_unavailable(device: torch.device) -> str | None:
    """Why FlexAttention cannot run compiled on this device (None = it can)."""
    if FLEX_MISSING:
        return FLEX_MISSING
    return _BROKEN.get(device.type) or _backend_missing(device.type)


@functools.cache
def _backend_missing(device_type: str) -> str | None:
    if device_type == "cuda":
        from torch.utils._triton import has_triton

        return None if has_triton() else "torch.compile has no Triton for CUDA FlexAttention"
    if device_type == "cpu":
        ok = shutil.which("g++") or shutil.which("clang++") or shutil.which("c++")
        return None if ok else "torch.compile needs a C++ compiler (g++/clang++) on the CPU"
    return f"FlexAttention is not built for device {device_type!r}"


def flex_problem(
    q: Tensor, k: Tensor, v: Tensor, *, need_weights: bool, dropout_p: float, bias: Tensor | None
) -> str | None:
    """Why this call cannot go through FlexAttention, in a few words (None = it can)."""
    if need_weights:
        return "the attention weights are asked for"
    if dropout_p:
        return "FlexAttention has no attention dropout"
    if bias is not None:
        return "a relative positional encoding's score bias is not a FlexAttention score_mod yet"
    if q.size(-2) != k.size(-2):
        return "queries and keys differ in length (step-wise decoding)"
    if (
        q.device.type == "cpu"
        and torch.is_grad_enabled()
        and any(t.requires_grad for t in (q, k, v))
    ):
        return "torch's CPU FlexAttention has no backward pass (NotImplementedError)"
    return flex_unavailable(q.device)


def _warn_once(reason: str) -> None:
    if reason not in _WARNED:
        _WARNED.add(reason)
        warnings.warn(
            f"FlexAttention not used: {reason}; attnbench's own kernels run instead", stacklevel=3
        )


def use_flex(kernel: str, q: Tensor, k: Tensor, v: Tensor, **call: Any) -> bool:
    """The per-call choice: True to run the FlexAttention kernel, False for the native one.

    native: never. flex: always, except that weights come from the native kernel (they are
    materialised anyway); a call flex cannot serve is an error. auto: where flex runs and is
    faster, on CUDA from MIN_FLEX_N tokens. On the CPU auto keeps the native kernels:
    training needs the backward pass CPU flex lacks, and for inference compiled flex was
    only 1.2-1.3x faster than the native kernel (truncated, w=64, N=2048-8192, one thread)
    while compiling took 9-15 s per new shape: a loss at the sizes CPU runs use.
    """
    if kernel == "native":
        return False
    if kernel == "auto" and (q.device.type != "cuda" or q.size(-2) < MIN_FLEX_N):
        return False
    problem = flex_problem(q, k, v, **call)
    if kernel == "flex":
        if problem and not call["need_weights"]:
            raise ConfigError(
                f"attention.kernel=flex cannot serve this call: {problem}; "
                "use attention.kernel=auto (native kernels where flex cannot run)"
            )
        return problem is None
    missing = flex_unavailable(q.device)
    if missing:  # the only reason worth a warning: flex cannot run here at all
        _warn_once(missing)
    return problem is None


def attend(
    kernel: str,
    flex: Callable[[], Tensor | None],
    native: Callable[[], tuple[Tensor, Tensor | None]],
    q: Tensor,
    k: Tensor,
    v: Tensor,
    **call: Any,
) -> tuple[Tensor, Tensor | None]:
    """(y, weights) from ``flex()`` when :func:`use_flex` picks it and it returns a tensor
    (None: the structure does not fit a block mask), else from ``native()``. Under auto, a
    failed compile marks flex broken on that device (one warning) and falls back."""
    if use_flex(kernel, q, k, v, **call):
        try:
            y = flex()
        except torch.OutOfMemoryError:
            raise
        except Exception as e:
            if kernel == "flex":
                raise
            _BROKEN[q.device.type] = f"torch.compile of FlexAttention failed ({one_line(e)})"
            _warn_once(_BROKEN[q.device.type])
            y = None
        if y is not None:
            return y, None
    return native()


# ----------------------------------------------------------------------------- running flex

_COMPILED: dict[str, Callable] = {}  # device type -> compiled flex_attention


def _flex_cpu(*args: Any, **kwargs: Any) -> Tensor:  # own code object: own compile cache
    return flex_attention(*args, **kwargs)


def _flex_fn(device_type: str) -> Callable:
    """flex_attention compiled once per process and device type (torch.compile then caches
    per shape). CUDA: shapes go dynamic after the first change (no recompile per padded
    length). CPU: static shapes, as inductor's CPU flex template miscompiles some
    mask_mods under dynamic shapes (torch 2.13: undeclared cur_kvSplitSize8 in the C++)."""
    if device_type not in _COMPILED:
        if device_type == "cpu":
            _COMPILED[device_type] = torch.compile(_flex_cpu, dynamic=False)
        else:
            _COMPILED[device_type] = torch.compile(flex_attention)
    return _COMPILED[device_type]


def _padding_score_mod(key_valid: Tensor | None) -> Callable | None:
    """-inf on padded keys: padding changes per batch, the cached block mask does not."""
    if key_valid is None:
        return None

    def score_mod(score: Tensor, b: Tensor, h: Tensor, q_idx: Tensor, kv_idx: Tensor) -> Tensor:
        return torch.where(key_valid[b, kv_idx], score, -float("inf"))

    return score_mod


def run_flex(
    q: Tensor, k: Tensor, v: Tensor, mask: BlockMask, key_valid: Tensor | None, compiled: bool
) -> Tensor:
    """(B, h, N, hd) -> (B, h, N, hd) through the block mask, padded keys scored -inf."""
    score_mod = _padding_score_mod(key_valid)
    if compiled:
        return _flex_fn(q.device.type)(q, k, v, score_mod=score_mod, block_mask=mask)
    with warnings.catch_warnings():  # "called without torch.compile": meant for small tests
        warnings.simplefilter("ignore", UserWarning)
        return flex_attention(q, k, v, score_mod=score_mod, block_mask=mask)


# ----------------------------------------------------------------------------- the cache


@dataclass
class _Entry:
    source: Tensor | None  # the structure tensor seen last (identity fast path)
    version: int
    content: Tensor | None  # a copy of the structure tensor (content check)
    value: Any


class MaskCache:
    """A small LRU of block masks. The key is hashable (shape, window, device...); a mask
    built from a tensor (edges, positions) is also checked against that tensor's content, so
    a new graph of the same shape is never served the old graph's mask (the same object, not
    modified in place, skips the content check)."""

    def __init__(self, size: int = 16):
        self.size = size
        self.entries: OrderedDict[tuple, _Entry] = OrderedDict()

    def get(self, key: tuple, build: Callable[[], Any], structure: Tensor | None = None) -> Any:
        if structure is not None:
            key = (*key, tuple(structure.shape), structure.dtype)
        hit = self.entries.get(key)
        if hit is not None and self._same(hit, structure):
            self.entries.move_to_end(key)
            hit.source, hit.version = structure, getattr(structure, "_version", 0)
            return hit.value
        value = build()
        content = None if structure is None else structure.detach().clone()
        self.entries[key] = _Entry(structure, getattr(structure, "_version", 0), content, value)
        self.entries.move_to_end(key)
        while len(self.entries) > self.size:
            self.entries.popitem(last=False)
        return value

    @staticmethod
    def _same(hit: _Entry, structure: Tensor | None) -> bool:
        if structure is None:
            return True
        if hit.source is structure and hit.version == structure._version:
            return True
        return bool(torch.equal(hit.content, structure))

    def clear(self) -> None:
        self.entries.clear()


MASKS = MaskCache()


def _block_mask(
    partial: Tensor, full: Tensor | None, n: int, mask_mod: Callable, block: int = BLOCK
) -> BlockMask:
    """BlockMask from dense block-level flags (B, nqb, nkb): partial tiles (mask_mod decides
    each pair) and full tiles (every pair allowed, mask_mod skipped)."""

    def ordered(dense: Tensor) -> tuple[Tensor, Tensor]:  # as torch's _dense_to_ordered
        dense = dense[:, None].to(torch.int32)  # (B, 1, nqb, nkb): one head, broadcast
        order = torch.argsort(dense, dim=-1, descending=True, stable=True)
        return dense.sum(-1).to(torch.int32), order.to(torch.int32).contiguous()

    kv_num, kv_idx = ordered(partial)
    full_num, full_idx = ordered(full) if full is not None else (None, None)
    return BlockMask.from_kv_blocks(
        kv_num, kv_idx, full_num, full_idx, BLOCK_SIZE=block, mask_mod=mask_mod, seq_lengths=(n, n)
    )


def _block_bounds(n: int, device: torch.device, block: int = BLOCK) -> tuple[Tensor, Tensor]:
    """First and last position of each block (nb,), the last block cut at n."""
    lo = torch.arange(0, n, block, device=device)
    return lo, (lo + block - 1).clamp(max=n - 1)


# ----------------------------------------------------------------------------- 1-D window


@torch.compiler.disable  # cache lookups and host syncs: not for tracing
def band_mask(n: int, window: int, causal: bool, device: torch.device) -> BlockMask:
    """Query i attends key j iff |i - j| <= window (0 <= i - j <= window when causal).

    Tiles are classified from their corners (O((N/BLOCK)²) integers, no (N, N) mask): a tile
    holds an allowed pair when the two position ranges come within the window, and is full
    when every pair is allowed."""
    w = window

    def build() -> BlockMask:
        lo, hi = _block_bounds(n, device)
        qlo, qhi, klo, khi = lo[:, None], hi[:, None], lo[None, :], hi[None, :]  # (nb, nb)
        if causal:  # i - j in [0, w]
            partial = (qhi >= klo) & (qlo - khi <= w)
            full = (qlo >= khi) & (qhi - klo <= w)
        else:  # |i - j| <= w
            partial = (klo - qhi <= w) & (qlo - khi <= w)
            full = (qhi - klo <= w) & (khi - qlo <= w)

        def mask_mod(b: Tensor, h: Tensor, q_idx: Tensor, kv_idx: Tensor) -> Tensor:
            d = q_idx - kv_idx
            return (d >= 0) & (d <= w) if causal else d.abs() <= w

        return _block_mask((partial & ~full)[None], full[None], n, mask_mod)

    return MASKS.get(("band", n, w, causal, str(device)), build)


def band_flex(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    window: int,
    *,
    key_valid: Tensor | None = None,
    causal: bool = False,
    compiled: bool = True,
) -> Tensor:
    """FlexAttention twin of ``sparse.band_attention`` (self-attention): (B, h, N, hd)."""
    mask = band_mask(q.size(-2), window, causal, q.device)
    return run_flex(q, k, v, mask, key_valid, compiled)


# ----------------------------------------------------------------------------- 2-D window


@torch.compiler.disable  # cache lookups and host syncs: not for tracing
def grid_mask(positions: Tensor, window: int, causal: bool) -> BlockMask:
    """Token i attends token j iff their grid cells are within Chebyshev distance ``window``
    or either is off the grid (a negative coordinate: a global token such as CLS), and
    j <= i when causal; positions (B, N, 2) (row, col), as ``sparse.grid_attention``.

    The mask_mod compares positions exactly; tiles are picked by the bounding boxes of their
    blocks' cells (a superset: row-major patches keep it tight), plus the whole row and
    column of tiles of a block holding a global token. O(B·N + B·(N/BLOCK)²)."""
    b, n, _ = positions.shape
    w, dev = window, positions.device

    def build() -> tuple[BlockMask, tuple[Tensor, ...]]:
        pos = (positions.round() if positions.is_floating_point() else positions).long()
        off = (pos < 0).any(-1)  # (B, N) global tokens
        rows, cols = pos[..., 0].contiguous(), pos[..., 1].contiguous()
        nb = -(-n // BLOCK)
        blk = (torch.arange(n, device=dev) // BLOCK).expand(b, n)  # (B, N)

        def extent(x: Tensor, how: str, fill: int) -> Tensor:  # per block, on-grid cells only
            x = x.masked_fill(off, fill)
            return x.new_full((b, nb), fill).scatter_reduce(1, blk, x, how, include_self=True)

        big = 1 << 40  # beyond any coordinate: a block without grid cells matches nothing
        box = [
            extent(x, how, fill)
            for x in (rows, cols)
            for how, fill in (("amin", big), ("amax", -big))
        ]  # rmin, rmax, cmin, cmax (B, nb)

        def near(lo: Tensor, hi: Tensor) -> Tensor:  # interval distance <= w: (B, nb, nb)
            return (lo[:, None, :] - hi[:, :, None] <= w) & (lo[:, :, None] - hi[:, None, :] <= w)

        partial = near(box[0], box[1]) & near(box[2], box[3])
        glob = off.new_zeros(b, nb).scatter_reduce(1, blk, off, "amax")  # (B, nb)
        partial = partial | glob[:, :, None] | glob[:, None, :]
        if causal:
            partial = partial & torch.ones(nb, nb, dtype=torch.bool, device=dev).tril()

        def mask_mod(bi: Tensor, h: Tensor, q_idx: Tensor, kv_idx: Tensor) -> Tensor:
            close = ((rows[bi, q_idx] - rows[bi, kv_idx]).abs() <= w) & (
                (cols[bi, q_idx] - cols[bi, kv_idx]).abs() <= w
            )
            allowed = close | off[bi, q_idx] | off[bi, kv_idx]
            return allowed & (kv_idx <= q_idx) if causal else allowed

        return _block_mask(partial, None, n, mask_mod)

    return MASKS.get(("grid", w, causal, str(dev)), build, structure=positions)


def grid_flex(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    positions: Tensor,
    window: int,
    *,
    key_valid: Tensor | None = None,
    causal: bool = False,
    compiled: bool = True,
) -> Tensor:
    """FlexAttention twin of ``sparse.grid_attention``: (B, h, N, hd)."""
    mask = grid_mask(positions, window, causal)
    return run_flex(q, k, v, mask, key_valid, compiled)


# ----------------------------------------------------------------------------- edges


@dataclass
class GraphMask:
    """A graph's block mask, or why it cannot be one; ``scores_per_edge`` is what the
    visited tiles cost relative to the edge kernel (visited tiles · BLOCK² / edges)."""

    mask: BlockMask | None
    problem: str | None
    scores_per_edge: float


@torch.compiler.disable  # cache lookups and host syncs: not for tracing
def graph_mask(edges: Tensor, b: int, n: int, causal: bool, self_loops: bool) -> GraphMask:
    """Node i attends node j for each edge (i, j) of edges (2, E) [query node, key node],
    flat indices b·N + i, as ``sparse.edge_attention``: with ``self_loops`` the given loops
    are dropped and one loop per node added; causal keeps j <= i.

    The edge list becomes tiles: a (BLOCK, BLOCK) boolean adjacency tile for every
    (sample, query block, key block) holding an edge, and a (B, nqb, nkb) table of tile
    numbers (-1 = no edge) the mask_mod looks pairs up in. Memory is O(visited tiles ·
    BLOCK²), so it fits graphs whose node order keeps neighbours close (banded, clustered,
    meshes); a random graph touches every tile (scores_per_edge says so, and auto keeps the
    edge kernel). Edges across samples or repeated edges (the edge kernel counts a repeat
    twice) cannot be a mask: ``problem`` says so."""
    dev = edges.device

    def build() -> GraphMask:
        dst, src = edges.long()
        if causal:
            keep = src % n <= dst % n
            dst, src = dst[keep], src[keep]
        if self_loops:
            keep = dst != src
            loops = torch.arange(b * n, device=dev)
            dst, src = torch.cat([dst[keep], loops]), torch.cat([src[keep], loops])
        if bool((dst // n != src // n).any()):
            return GraphMask(None, "edges join nodes of different samples", float("inf"))
        pair = dst * n + src % n  # b·N² + i·N + j: unique per directed edge
        if pair.unique().numel() != pair.numel():
            return GraphMask(None, "the edge list repeats an edge", float("inf"))
        sample, qi, kj = dst // n, dst % n, src % n
        nb = -(-n // BLOCK)
        tile_key = (sample * nb + qi // BLOCK) * nb + kj // BLOCK  # (E,)
        visited, tile_of_edge = tile_key.unique(return_inverse=True)  # (T,), (E,)
        t = visited.numel()
        tiles = torch.zeros(t, BLOCK, BLOCK, dtype=torch.bool, device=dev)
        tiles[tile_of_edge, qi % BLOCK, kj % BLOCK] = True
        tile_of = torch.full((b * nb * nb,), -1, dtype=torch.long, device=dev)
        tile_of[visited] = torch.arange(t, device=dev)
        tile_of = tile_of.view(b, nb, nb)

        def mask_mod(bi: Tensor, h: Tensor, q_idx: Tensor, kv_idx: Tensor) -> Tensor:
            tile = tile_of[bi, q_idx // BLOCK, kv_idx // BLOCK]
            return (tile >= 0) & tiles[tile.clamp(min=0), q_idx % BLOCK, kv_idx % BLOCK]

        cost = t * BLOCK * BLOCK / max(dst.numel(), 1)
        return GraphMask(_block_mask(tile_of >= 0, None, n, mask_mod), None, cost)

    return MASKS.get(("graph", b, n, causal, self_loops, str(dev)), build, structure=edges)


def graph_flex(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    edges: Tensor,
    *,
    kernel: str,
    key_valid: Tensor | None = None,
    causal: bool = False,
    self_loops: bool = True,
    compiled: bool = True,
) -> Tensor | None:
    """FlexAttention twin of ``sparse.edge_attention`` -> (B, h, N, hd), or None where the
    graph does not fit a block mask, or (auto) its tiles would cost more than the edges."""
    b, _, n, _ = q.shape
    if edges.dim() != 2 or edges.size(0) != 2:
        return None  # the native kernel names the problem
    mask = graph_mask(edges.to(q.device), b, n, causal, self_loops)
    if mask.problem is None and (
        kernel == "flex" or mask.scores_per_edge <= GRAPH_MAX_SCORES_PER_EDGE
    ):
        return run_flex(q, k, v, mask.mask, key_valid, compiled)
    if kernel == "flex" and mask.problem:
        raise ConfigError(
            f"attention.kernel=flex cannot serve this graph: {mask.problem}; "
            "use attention.kernel=auto (the edge kernel serves it)"
        )
    return None
