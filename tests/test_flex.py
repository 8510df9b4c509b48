"""FlexAttention kernels (attnbench.nn.flex) against the native restricted kernels
(attnbench.nn.sparse), the block-mask cache, and the plugins' per-call kernel choice.

Exactness runs FlexAttention uncompiled (its reference implementation, small sizes):
compiling on the CPU costs tens of seconds per shape, and the compiled kernels are what the
GPU benchmark measures."""

from __future__ import annotations

import pytest
import torch

from attnbench import registry
from attnbench.nn import flex
from attnbench.nn.ctx import Ctx
from attnbench.nn.sparse import band_attention, edge_attention, grid_attention
from attnbench.registry import ConfigError

pytestmark = pytest.mark.skipif(flex.FLEX_MISSING is not None, reason="no FlexAttention")

B, H, HD = 2, 2, 16
TOL = dict(atol=1e-5, rtol=1e-4)


@pytest.fixture(autouse=True)
def fresh_cache():
    flex.MASKS.clear()
    yield
    flex.MASKS.clear()


@pytest.fixture
def eager_flex(monkeypatch):
    """Plugins' flex calls run uncompiled (same kernel semantics, no compile time)."""
    monkeypatch.setattr(flex, "_flex_fn", lambda device_type: flex.flex_attention)


def qkv(n: int, seed: int = 0) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(B, H, n, HD, generator=g) for _ in range(3))


def lengths_mask(lengths: list[int], n: int) -> torch.Tensor:
    return torch.arange(n)[None, :] < torch.tensor(lengths)[:, None]  # (B, N)


# ----------------------------------------------------------------------------- 1-D window


@pytest.mark.parametrize("n,w", [(300, 64), (300, 0), (300, 130), (257, 200), (40, 5)])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("pad", [False, True])
def test_band_flex_equals_band_attention(n, w, causal, pad):
    q, k, v = qkv(n)
    # second sample: only the first 20 keys are real, so late queries see no key at all
    key_valid = lengths_mask([n, min(n, 20)], n) if pad else None
    y_flex = flex.band_flex(q, k, v, w, key_valid=key_valid, causal=causal, compiled=False)
    y_ref, _ = band_attention(q, k, v, w, key_valid=key_valid, causal=causal)
    torch.testing.assert_close(y_flex, y_ref, **TOL)
    if pad:  # queries beyond the window of every real key: zero, as the native kernel
        assert (y_flex[1, :, 20 + w + 1 :] == 0).all()


def test_band_mask_visits_only_the_band():
    n, w = 2048, 64
    mask = flex.band_mask(n, w, False, torch.device("cpu"))
    nb = n // flex.BLOCK
    visited = mask.kv_num_blocks.sum() + mask.full_kv_num_blocks.sum()
    assert visited == nb + 2 * (nb - 1)  # the diagonal and its two neighbours: O(N·w)


# ----------------------------------------------------------------------------- 2-D window


def grid(rows: int, cols: int, cls: bool) -> torch.Tensor:
    r, c = torch.meshgrid(torch.arange(rows), torch.arange(cols), indexing="ij")
    pos = torch.stack([r.flatten(), c.flatten()], -1)  # (N, 2) row-major
    if cls:
        pos = torch.cat([pos.new_full((1, 2), -1), pos])
    return pos.expand(B, -1, -1).clone()


@pytest.mark.parametrize("w", [0, 1, 3])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("cls", [False, True])
def test_grid_flex_equals_grid_attention(w, causal, cls):
    pos = grid(12, 23, cls)  # 276 (+1) tokens: three query blocks
    n = pos.size(1)
    pos[1] = pos[1, torch.randperm(n, generator=torch.Generator().manual_seed(1))]  # any order
    key_valid = lengths_mask([n, n - 50], n)
    q, k, v = qkv(n)
    y_flex = flex.grid_flex(q, k, v, pos, w, key_valid=key_valid, causal=causal, compiled=False)
    y_ref, _ = grid_attention(q, k, v, pos, w, key_valid=key_valid, causal=causal)
    torch.testing.assert_close(y_flex, y_ref, **TOL)


# ----------------------------------------------------------------------------- edges


def local_edges(n: int, degree: int, reach: int, seed: int = 0) -> torch.Tensor:
    """(2, E) unique flat edges, each node to ``degree`` nodes within ``reach`` of it."""
    g = torch.Generator().manual_seed(seed)
    dst = torch.arange(B * n).repeat_interleave(degree)
    src = (dst % n + torch.randint(-reach, reach + 1, dst.shape, generator=g)).clamp(0, n - 1)
    flat = torch.unique(dst * (B * n) + (dst // n) * n + src)
    return torch.stack([flat // (B * n), flat % (B * n)])


@pytest.mark.parametrize("self_loops", [True, False])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("pad", [False, True])
def test_graph_flex_equals_edge_attention(self_loops, causal, pad):
    n = 300
    edges = local_edges(n, 6, 40)
    key_valid = lengths_mask([n, 150], n) if pad else None
    q, k, v = qkv(n)
    kw = dict(key_valid=key_valid, causal=causal, self_loops=self_loops)
    y_flex = flex.graph_flex(q, k, v, edges, kernel="flex", compiled=False, **kw)
    y_ref, _ = edge_attention(q, k, v, edges, **kw)
    torch.testing.assert_close(y_flex, y_ref, **TOL)


def test_graph_that_is_not_a_mask_is_refused_by_flex_and_left_to_the_edge_kernel():
    n = 64
    q, k, v = qkv(n)
    repeated = torch.tensor([[0, 0, 1], [5, 5, 2]])  # the edge kernel weights a repeat twice
    across = torch.tensor([[0], [n + 3]])  # node 0 of sample 0 -> node 3 of sample 1
    for edges, why in ((repeated, "repeats"), (across, "different samples")):
        flex.MASKS.clear()
        assert flex.graph_flex(q, k, v, edges, kernel="auto", compiled=False) is None
        with pytest.raises(ConfigError, match=why):
            flex.graph_flex(q, k, v, edges, kernel="flex", compiled=False)


def test_random_graph_keeps_the_edge_kernel_under_auto():
    n = 2048  # 8 random neighbours per node touch nearly every (128, 128) tile
    g = torch.Generator().manual_seed(0)
    dst = torch.arange(B * n).repeat_interleave(8)
    src = (dst // n) * n + torch.randint(0, n, dst.shape, generator=g)
    flat = torch.unique(dst * (B * n) + src)
    edges = torch.stack([flat // (B * n), flat % (B * n)])
    mask = flex.graph_mask(edges, B, n, False, True)
    assert mask.scores_per_edge > flex.GRAPH_MAX_SCORES_PER_EDGE
    q, k, v = (t[..., :1, :] for t in qkv(1))  # shape only: auto declines before computing
    q, k, v = (t.expand(B, H, n, HD) for t in (q, k, v))
    assert flex.graph_flex(q, k, v, edges, kernel="auto", compiled=False) is None
    banded = local_edges(n, 8, 40)  # three tiles per query block
    assert flex.graph_mask(banded, B, n, False, True).scores_per_edge < 48


# ----------------------------------------------------------------------------- the cache


def test_mask_cache_serves_the_same_mask_for_the_same_structure_only():
    cpu = torch.device("cpu")
    band = flex.band_mask(512, 64, False, cpu)
    assert flex.band_mask(512, 64, False, cpu) is band
    assert flex.band_mask(512, 32, False, cpu) is not band
    assert flex.band_mask(512, 64, True, cpu) is not band

    n = 200
    edges = local_edges(n, 4, 20, seed=0)
    first = flex.graph_mask(edges, B, n, False, True)
    assert flex.graph_mask(edges, B, n, False, True) is first
    assert flex.graph_mask(edges.clone(), B, n, False, True) is first  # same content
    other = local_edges(n, 4, 20, seed=1)
    assert flex.graph_mask(other, B, n, False, True) is not first
    edges[1, 0] = (edges[1, 0] + 7) % n  # changed in place: not the cached graph any more
    assert flex.graph_mask(edges, B, n, False, True) is not first

    pos = grid(8, 8, False)
    g1 = flex.grid_mask(pos, 1, False)
    assert flex.grid_mask(pos.clone(), 1, False) is g1
    assert flex.grid_mask(grid(4, 16, False), 1, False) is not g1


def test_mask_cache_is_bounded():
    cache = flex.MaskCache(size=3)
    for n in range(10):
        cache.get(("n", n), lambda: object())
    assert len(cache.entries) == 3


# ----------------------------------------------------------------------------- the choice


def build(name: str, **params):
    torch.manual_seed(0)
    return registry.build("attention", name, d_model=H * HD, heads=H, **params).eval()


def test_kernel_parameter_is_validated():
    with pytest.raises(ConfigError, match="auto, flex, native"):
        build("truncated", kernel="triton")
    with pytest.raises(ConfigError, match="auto, flex, native"):
        build("graph", kernel="Flex")


def test_auto_keeps_native_kernels_for_cpu_training():
    attn = build("truncated", window=4, kernel="auto").train()
    x = torch.randn(B, 300, H * HD, requires_grad=True)
    q, k, v = attn.heads_qkv(x, x, x, Ctx())
    call = dict(need_weights=False, dropout_p=0.0, bias=None)
    assert not flex.use_flex("auto", q, k, v, **call)
    assert "no backward" in flex.flex_problem(q, k, v, **call)
    y, _ = attn(x, x, x, ctx=Ctx(causal=True))
    y.sum().backward()  # trains with no error
    assert x.grad is not None and torch.isfinite(x.grad).all()


def test_kernel_flex_refuses_cpu_training_with_the_reason():
    attn = build("truncated", window=4, kernel="flex").train()
    x = torch.randn(B, 300, H * HD, requires_grad=True)
    with pytest.raises(ConfigError, match="no backward pass.*kernel=auto"):
        attn(x, x, x)


@pytest.mark.usefixtures("eager_flex")
def test_plugins_with_kernel_flex_equal_native_in_cpu_inference():
    n = 300
    x = torch.randn(B, n, H * HD)
    key_valid = lengths_mask([n, 170], n)
    pos = grid(15, 20, False)
    edges = local_edges(n, 5, 30)
    cases = [
        ("truncated", dict(window=40), Ctx(key_padding_mask=key_valid, causal=True)),
        ("truncated", dict(window=2), Ctx(key_padding_mask=key_valid, positions=pos)),
        ("graph", {}, Ctx(key_padding_mask=key_valid, edges=edges)),
    ]
    for name, params, ctx in cases:
        fast, slow = build(name, kernel="flex", **params), build(name, kernel="native", **params)
        with torch.no_grad():
            y_flex, w_flex = fast(x, x, x, ctx=ctx)
            y_ref, _ = slow(x, x, x, ctx=ctx)
            # weights are asked for: they come from the native kernel, under any kernel
            y_w, weights = fast(x, x, x, ctx=ctx, need_weights=True)
        assert w_flex is None and weights.shape == (B, H, n, n)
        torch.testing.assert_close(y_flex, y_ref, **TOL)
        torch.testing.assert_close(y_w, y_ref, **TOL)


def test_missing_flex_is_named_and_falls_back(monkeypatch):
    reason = "torch 2.4 has no FlexAttention (torch >= 2.5 has)"
    monkeypatch.setattr(flex, "FLEX_MISSING", reason)
    assert flex.flex_unavailable(torch.device("cuda")) == reason
    with pytest.raises(ConfigError, match=r"kernel=flex: torch 2\.4 .*use attention\.kernel=auto"):
        flex.check_kernel("flex")
    assert flex.check_kernel("auto") == "auto"


def test_auto_falls_back_when_the_flex_kernel_fails(monkeypatch):
    monkeypatch.setattr(flex, "use_flex", lambda kernel, *a, **kw: True)
    monkeypatch.setattr(flex, "_BROKEN", {})
    monkeypatch.setattr(flex, "_WARNED", set())
    q, k, v = qkv(8)
    native = torch.ones(1)

    def broken() -> torch.Tensor:
        raise RuntimeError("C++ compile error\nlong compiler log")

    with pytest.warns(UserWarning, match="FlexAttention not used: torch.compile .*C\\+\\+ compile"):
        y, _ = flex.attend("auto", broken, lambda: (native, None), q, k, v)
    assert y is native
    assert "compile error" in flex.flex_unavailable(q.device)  # not retried on this device
    with pytest.raises(RuntimeError, match="compile error"):  # kernel=flex: no silent fallback
        flex.attend("flex", broken, lambda: (native, None), q, k, v)
