"""Restricted attention: truncated (1-D band, 2-D grid window) and graph (edge list)."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from attnbench import registry
from attnbench.nn.attention import split_heads
from attnbench.nn.ctx import Ctx
from attnbench.nn.sparse import band_attention, edge_attention, grid_attention
from attnbench.registry import ConfigError

D, H = 16, 2


def build(name: str, **params):
    torch.manual_seed(0)
    return registry.build("attention", name, d_model=D, heads=H, **params).eval()


def twin(name: str, **params):
    """(variant, dot) with identical projection weights."""
    attn, dot = build(name, **params), build("dot")
    dot.load_state_dict(attn.state_dict())
    return attn, dot


def padding(lengths: list[int], n: int) -> torch.Tensor:
    return torch.arange(n)[None, :] < torch.tensor(lengths)[:, None]  # (B, N)


def reference(attn, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Dense masked softmax with attn's weights; mask (B, 1|h, N, N) bool; empty rows -> 0."""
    q, k, v = (split_heads(t, H) for t in attn.qkv(x).chunk(3, dim=-1))
    scores = (q @ k.transpose(-2, -1)) / math.sqrt(D // H)
    p = scores.masked_fill(~mask, float("-inf")).softmax(-1).nan_to_num(0.0)
    y = (p @ v).transpose(1, 2).reshape(x.shape)
    return attn.out(y), p


def band_mask(n: int, w: int, causal: bool = False) -> torch.Tensor:
    i = torch.arange(n)
    m = (i[:, None] - i[None, :]).abs() <= w
    return m & (i[None, :] <= i[:, None]) if causal else m


# ----------------------------------------------------------------------------- truncated


@settings(max_examples=15, deadline=None)
@given(n=st.integers(1, 20), causal=st.booleans(), pad=st.booleans())
def test_truncated_with_window_covering_everything_is_dot(n, causal, pad):
    attn, dot = twin("truncated", window=n)
    x = torch.randn(2, n, D)
    kpm = padding([n, max(1, n // 2)], n) if pad else None
    ctx = Ctx(key_padding_mask=kpm, causal=causal)
    y, w = attn(x, x, x, ctx=ctx, need_weights=True)
    y_ref, w_ref = dot(x, x, x, ctx=ctx, need_weights=True)
    torch.testing.assert_close(y, y_ref, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(w, w_ref, atol=1e-5, rtol=1e-4)
    y_fast, _ = attn(x, x, x, ctx=ctx)  # the SDPA path agrees with the eager one
    torch.testing.assert_close(y_fast, y_ref, atol=1e-5, rtol=1e-4)


@settings(max_examples=20, deadline=None)
@given(n=st.integers(1, 90), w=st.integers(0, 12), causal=st.booleans(), cut=st.integers(0, 90))
def test_truncated_weights_stay_in_the_window(n, w, causal, cut):
    attn = build("truncated", window=w)
    length = max(1, min(n, cut))
    kpm = padding([n, length], n)
    x = torch.randn(2, n, D)
    ctx = Ctx(key_padding_mask=kpm, causal=causal)
    y, weights = attn(x, x, x, ctx=ctx, need_weights=True)
    assert weights.shape == (2, H, n, n)
    assert (weights >= 0).all()
    allowed = band_mask(n, w, causal)[None, None] & kpm[:, None, None, :]
    assert (weights[~allowed.expand_as(weights)] == 0).all()
    rows = weights.sum(-1)  # rows with at least one allowed key sum to one, others to zero
    torch.testing.assert_close(rows, allowed.any(-1).expand_as(rows).float())
    y_ref, w_ref = reference(attn, x, allowed)
    torch.testing.assert_close(weights, w_ref, atol=1e-5, rtol=1e-4)
    keep = allowed.any(-1)[:, 0, :, None]  # (B, N, 1) queries that see some key
    torch.testing.assert_close(y * keep, y_ref * keep, atol=1e-5, rtol=1e-4)
    y_fast, _ = attn(x, x, x, ctx=ctx)
    assert torch.isfinite(y_fast).all()  # padding queries with no key get 0, never NaN
    torch.testing.assert_close(y_fast, y, atol=1e-5, rtol=1e-4)


def test_truncated_causal_decoding_with_fewer_queries_matches_full():
    attn = build("truncated", window=3)
    x = torch.randn(2, 40, D)
    ctx = Ctx(causal=True)
    y_full, w_full = attn(x, x, x, ctx=ctx, need_weights=True)
    y_last, w_last = attn(x[:, -5:], x, x, ctx=ctx, need_weights=True)
    torch.testing.assert_close(y_last, y_full[:, -5:], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(w_last, w_full[:, :, -5:], atol=1e-5, rtol=1e-4)


def test_truncated_refuses_cross_attention():
    attn = build("truncated")
    with pytest.raises(ConfigError, match="queries"):
        attn(torch.randn(1, 4, D), torch.randn(1, 6, D), torch.randn(1, 6, D))
    with pytest.raises(ConfigError, match="window"):
        build("truncated", window=-1)


def grid_positions(rows: int, cols: int, b: int, cls: bool = False) -> torch.Tensor:
    r, c = torch.meshgrid(torch.arange(rows), torch.arange(cols), indexing="ij")
    pos = torch.stack([r.flatten(), c.flatten()], -1)
    if cls:
        pos = torch.cat([pos, pos.new_full((1, 2), -1)])
    return pos.expand(b, -1, -1)


@settings(max_examples=15, deadline=None)
@given(
    rows=st.integers(1, 6),
    cols=st.integers(1, 6),
    w=st.integers(0, 3),
    causal=st.booleans(),
    cls=st.booleans(),
    perm=st.booleans(),
)
def test_truncated_2d_window_matches_dense_mask(rows, cols, w, causal, cls, perm):
    attn = build("truncated", window=w)
    pos = grid_positions(rows, cols, 2, cls).clone()
    n = pos.size(1)
    if perm:  # positions need not be row-major
        pos[1] = pos[1, torch.randperm(n)]
    kpm = padding([n, max(1, n - 3)], n)
    x = torch.randn(2, n, D)
    ctx = Ctx(key_padding_mask=kpm, causal=causal, positions=pos)
    y, weights = attn(x, x, x, ctx=ctx, need_weights=True)
    # brute force: Chebyshev distance on the grid; off-grid (CLS) tokens are global
    cheb = (pos[:, :, None, :] - pos[:, None, :, :]).abs().amax(-1) <= w  # (B, N, N)
    glob = (pos < 0).any(-1)
    allowed = cheb | glob[:, None, :] | glob[:, :, None]
    allowed = allowed & kpm[:, None, :]
    if causal:
        allowed = allowed & torch.ones(n, n, dtype=torch.bool).tril()
    allowed = allowed[:, None]  # (B, 1, N, N)
    y_ref, w_ref = reference(attn, x, allowed)
    torch.testing.assert_close(weights, w_ref.expand_as(weights), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(y, y_ref, atol=1e-5, rtol=1e-4)
    y_fast, _ = attn(x, x, x, ctx=ctx)
    torch.testing.assert_close(y_fast, y_ref, atol=1e-5, rtol=1e-4)


# ----------------------------------------------------------------------------- graph


def complete_edges(b: int, n: int) -> torch.Tensor:
    i = torch.arange(n)
    dst, src = i.repeat_interleave(n), i.repeat(n)
    off = (torch.arange(b) * n).repeat_interleave(n * n)
    return torch.stack([dst.repeat(b) + off, src.repeat(b) + off])


def test_graph_on_complete_graph_is_dot():
    attn, dot = twin("graph")
    x = torch.randn(2, 7, D)
    kpm = padding([7, 4], 7)
    for ctx_kw in ({}, {"key_padding_mask": kpm}, {"causal": True}):
        ctx = Ctx(edges=complete_edges(2, 7), **ctx_kw)
        y, w = attn(x, x, x, ctx=ctx, need_weights=True)
        y_ref, w_ref = dot(x, x, x, ctx=ctx, need_weights=True)
        torch.testing.assert_close(y, y_ref, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(w, w_ref, atol=1e-5, rtol=1e-4)


@settings(max_examples=20, deadline=None)
@given(
    n=st.integers(1, 12),
    density=st.floats(0.0, 1.0),
    loops=st.booleans(),
    seed=st.integers(0, 1000),
)
def test_graph_matches_dense_boolean_mask(n, density, loops, seed):
    g = torch.Generator().manual_seed(seed)
    adj = torch.rand(2, n, n, generator=g) < density  # (B, Nq, Nk)
    kpm = padding([n, max(1, n - 2)], n)
    dst_b, dst, src = adj.nonzero(as_tuple=True)
    edges = torch.stack([dst_b * n + dst, dst_b * n + src])
    attn = build("graph", self_loops=loops)
    x = torch.randn(2, n, D, generator=g)
    ctx = Ctx(edges=edges, key_padding_mask=kpm)
    y, weights = attn(x, x, x, ctx=ctx, need_weights=True)
    allowed = adj | torch.eye(n, dtype=torch.bool) if loops else adj
    allowed = (allowed & kpm[:, None, :])[:, None]
    y_ref, w_ref = reference(attn, x, allowed)
    torch.testing.assert_close(weights, w_ref.expand_as(weights), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(y, y_ref, atol=1e-5, rtol=1e-4)
    assert ((weights.sum(-1) - 1).abs() < 1e-5).eq(allowed.any(-1)).all()


def test_graph_refuses_without_edges():
    attn = build("graph")
    x = torch.randn(1, 5, D)
    with pytest.raises(ConfigError, match="needs graph edges.*tasks that give edges: graph"):
        attn(x, x, x, ctx=Ctx())
    with pytest.raises(ConfigError, match="needs graph edges"):
        registry.get("attention", "graph").cls.check_use(graph=False)


# ----------------------------------------------------------------------------- gradients


def _qkv(b: int, h: int, n: int, hd: int):
    g = torch.Generator().manual_seed(0)
    return [
        torch.randn(b, h, n, hd, dtype=torch.float64, generator=g, requires_grad=True)
        for _ in range(3)
    ]


def test_gradcheck_band_and_grid():
    q, k, v = _qkv(1, 1, 7, 2)
    kv = padding([5], 7)
    assert torch.autograd.gradcheck(
        lambda q, k, v: band_attention(q, k, v, 2, key_valid=kv, causal=False)[0], (q, k, v)
    )
    assert torch.autograd.gradcheck(
        lambda q, k, v: band_attention(q, k, v, 1, causal=True, need_weights=True)[1], (q, k, v)
    )
    pos = grid_positions(2, 3, 1, cls=True)
    assert torch.autograd.gradcheck(
        lambda q, k, v: grid_attention(q, k, v, pos, 1, key_valid=kv)[0], (q, k, v)
    )


def test_gradcheck_edges():
    q, k, v = _qkv(2, 2, 5, 3)
    g = torch.Generator().manual_seed(1)
    edges = torch.randint(0, 5, (2, 16), generator=g)
    edges = edges + torch.tensor([[0] * 8 + [5] * 8])  # half the edges in the second graph
    kv = padding([5, 4], 5)
    assert torch.autograd.gradcheck(
        lambda q, k, v: edge_attention(q, k, v, edges, key_valid=kv)[0], (q, k, v)
    )
    assert torch.autograd.gradcheck(
        lambda q, k, v: edge_attention(q, k, v, edges, need_weights=True)[1], (q, k, v)
    )


# ----------------------------------------------------------------------------- end to end


def test_truncated_trains_on_sentiment(tmp_path):
    from conftest import fast_dev_run

    summary = fast_dev_run(["attention=truncated", "attention.window=4"], tmp_path)
    assert summary["plugins"]["attention"] == {
        "name": "truncated",
        "window": 4,
        "dropout": 0.0,
        "bias": True,
        "kernel": "auto",
    }
    assert math.isfinite(summary["metrics"]["test/loss"])


def test_graph_refused_on_sentiment(tmp_path):
    from conftest import fast_dev_run

    with pytest.raises(ConfigError, match="tasks that give edges: graph"):
        fast_dev_run(["attention=graph"], tmp_path)


@pytest.mark.parametrize(
    "overrides",
    [
        ["task=graph", "attention=graph"],
        ["task=image", "attention=truncated", "attention.window=1"],
    ],
)
def test_restricted_attention_trains_on_structured_tasks(tmp_path, overrides):
    from conftest import fast_dev_run

    summary = fast_dev_run(overrides, tmp_path)
    assert math.isfinite(summary["metrics"]["test/loss"])
