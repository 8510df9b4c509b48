"""Positional encodings: sinusoidal closed form, RoPE, ALiBi, learned relative bias."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import attnbench
from attnbench.nn.ctx import Ctx
from attnbench.registry import ConfigError


def build(name: str, d_model: int = 8, **params):
    return attnbench.build("posenc", name, d_model=d_model, **params)


def repeated(vec: torch.Tensor, n: int) -> torch.Tensor:
    """(hd,) -> (1, 1, n, hd): the same vector at every position."""
    return vec.expand(1, 1, n, -1).clone()


# ---------------------------------------------------------------- sinusoidal


def test_sinusoidal_matches_its_closed_form():
    d, n = 6, 9
    pe = build("sinusoidal", d_model=d)
    got = pe(torch.zeros(1, n, d), Ctx())[0]
    for pos in range(n):
        for i in range(d // 2):
            angle = pos / 10000 ** (2 * i / d)
            assert got[pos, 2 * i].item() == pytest.approx(math.sin(angle), abs=1e-6)
            assert got[pos, 2 * i + 1].item() == pytest.approx(math.cos(angle), abs=1e-6)
    positions = torch.tensor([[4, 0, 7]])  # explicit positions pick those rows
    torch.testing.assert_close(
        pe(torch.zeros(1, 3, d), Ctx(positions=positions))[0], got[[4, 0, 7]]
    )


# ---------------------------------------------------------------- RoPE


@settings(max_examples=25, deadline=None)
@given(offset=st.integers(0, 500), n=st.integers(2, 6), seed=st.integers(0, 2**16))
def test_rope_keeps_norms_and_scores_depend_only_on_the_offset(offset, n, seed):
    torch.manual_seed(seed)
    rope = build("rope")
    q0, k0 = torch.randn(4), torch.randn(4)
    q, k = repeated(q0, n), repeated(k0, n)
    pos = torch.arange(n)[None] + offset
    rq, rk = rope.rotate(q, k, Ctx(positions=pos))
    torch.testing.assert_close(rq.norm(dim=-1), q.norm(dim=-1))
    torch.testing.assert_close(rk.norm(dim=-1), k.norm(dim=-1))
    scores = (rq @ rk.transpose(-2, -1))[0, 0]  # (n, n)
    # the same score on every diagonal: it depends on i - j only ...
    torch.testing.assert_close(scores[1:, 1:], scores[:-1, :-1], atol=1e-4, rtol=1e-4)
    # ... and not on where the sequence starts
    rq0, rk0 = rope.rotate(q, k, Ctx())
    torch.testing.assert_close(scores, (rq0 @ rk0.transpose(-2, -1))[0, 0], atol=1e-4, rtol=1e-4)
    assert not torch.allclose(scores[0, 0], scores[1, 0])  # it does depend on the offset


@settings(max_examples=15, deadline=None)
@given(shift=st.tuples(st.integers(-20, 20), st.integers(-20, 20)), seed=st.integers(0, 2**16))
def test_rope_2d_depends_only_on_the_2d_offset(shift, seed):
    torch.manual_seed(seed)
    rope = build("rope")
    q, k = repeated(torch.randn(8), 6), repeated(torch.randn(8), 6)
    grid = torch.tensor([[0, 0], [0, 1], [1, 0], [1, 1], [2, 0], [2, 1]])[None]  # (1, 6, 2)
    rq, rk = rope.rotate(q, k, Ctx(positions=grid))
    sq, sk = rope.rotate(q, k, Ctx(positions=grid + torch.tensor(shift)))
    torch.testing.assert_close(rq.norm(dim=-1), q.norm(dim=-1))
    torch.testing.assert_close(
        rq @ rk.transpose(-2, -1), sq @ sk.transpose(-2, -1), atol=1e-4, rtol=1e-4
    )
    scores = (rq @ rk.transpose(-2, -1))[0, 0]
    # (0,0)->(0,1) and (1,0)->(1,1) are the same offset; (0,0)->(1,0) is another
    torch.testing.assert_close(scores[0, 1], scores[2, 3])
    assert not torch.allclose(scores[0, 1], scores[0, 2])


def test_rope_needs_an_even_head_size():
    rope = build("rope")
    q = torch.randn(1, 1, 3, 5)
    with pytest.raises(ConfigError, match="divisible by 2"):
        rope.rotate(q, q, Ctx())
    q = torch.randn(1, 1, 3, 6)
    with pytest.raises(ConfigError, match="divisible by 4"):
        rope.rotate(q, q, Ctx(positions=torch.zeros(1, 3, 2)))


def test_rope_decoding_rotates_queries_by_their_own_positions():
    rope = build("rope")
    q, k = torch.randn(1, 2, 5, 4), torch.randn(1, 2, 5, 4)
    full_q, full_k = rope.rotate(q, k, Ctx(causal=True))
    last_q, same_k = rope.rotate(q[:, :, -1:], k, Ctx(causal=True))
    torch.testing.assert_close(last_q, full_q[:, :, -1:])
    torch.testing.assert_close(same_k, full_k)


# ---------------------------------------------------------------- ALiBi


def test_alibi_slopes_follow_the_paper():
    alibi = build("alibi", heads=8)
    torch.testing.assert_close(alibi.slopes, 2.0 ** -torch.arange(1, 9, dtype=torch.float32))
    six = build("alibi", heads=6).slopes  # 4 from the 4-head series, 2 interleaved from 8
    expected = [2**-2, 2**-4, 2**-6, 2**-8, 2**-1, 2**-3]
    torch.testing.assert_close(six, torch.tensor(expected))


@settings(max_examples=20, deadline=None)
@given(offset=st.integers(0, 300), n=st.integers(2, 6))
def test_alibi_bias_depends_only_on_the_offset(offset, n):
    alibi = build("alibi", heads=4)
    bias = alibi.score_bias(n, n, Ctx(positions=torch.arange(n)[None] + offset))
    assert bias.shape == (1, 4, n, n)
    dist = (torch.arange(n)[:, None] - torch.arange(n)[None, :]).abs()
    torch.testing.assert_close(bias[0], -alibi.slopes[:, None, None] * dist)
    torch.testing.assert_close(bias, alibi.score_bias(n, n, Ctx()))
    # decoding: the last query against every key is the full bias's last row
    torch.testing.assert_close(alibi.score_bias(1, n, Ctx()), bias[:, :, -1:])


def test_alibi_2d_uses_the_euclidean_grid_distance():
    alibi = build("alibi", heads=2)
    grid = torch.tensor([[[0, 0], [3, 4], [1, 1]]])
    bias = alibi.score_bias(3, 3, Ctx(positions=grid))
    torch.testing.assert_close(bias[0, :, 0, 1], -alibi.slopes * 5.0)
    torch.testing.assert_close(bias, alibi.score_bias(3, 3, Ctx(positions=grid + 7)))


# ---------------------------------------------------------------- learned relative bias


@settings(max_examples=20, deadline=None)
@given(offset=st.integers(0, 300), n=st.integers(2, 7))
def test_relative_bias_depends_only_on_the_clipped_offset(offset, n):
    rel = build("relative", heads=3, max_distance=2)
    bias = rel.score_bias(n, n, Ctx(positions=torch.arange(n)[None] + offset))[0]  # (h, n, n)
    torch.testing.assert_close(bias, rel.score_bias(n, n, Ctx())[0])
    for i in range(n):
        for j in range(n):
            clipped = max(-2, min(2, j - i))
            torch.testing.assert_close(bias[:, i, j], rel.table[:, 0, clipped + 2])


def test_relative_bias_is_learned_per_head_and_2d_adds_both_axes():
    rel = build("relative", heads=2, max_distance=3)
    bias = rel.score_bias(4, 4, Ctx())
    assert not torch.allclose(bias[0, 0], bias[0, 1])  # heads differ
    bias.sum().backward()
    assert rel.table.grad[:, 0].abs().sum() > 0
    grid = torch.tensor([[[0, 0], [2, 5]]])
    bias2 = rel.score_bias(2, 2, Ctx(positions=grid))
    # offset (2, 5): row offset 2, column offset clipped to 3
    torch.testing.assert_close(bias2[0, :, 0, 1], rel.table[:, 0, 2 + 3] + rel.table[:, 1, 3 + 3])
    with pytest.raises(ConfigError, match="max_distance"):
        build("relative", heads=4, max_distance=0)
