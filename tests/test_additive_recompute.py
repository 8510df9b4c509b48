"""Additive attention's chunked, recomputed backward (attnbench.nn.additive): the same values
and gradients as the textbook formula computed whole, the same dropout mask in backward as
in forward, and peak memory that grows like N, not N²."""

from __future__ import annotations

import torch
from torch.func import functional_call

from attnbench.bench import cpu_peak_bytes
from attnbench.nn.additive import AdditiveScore
from attnbench.nn.ctx import Ctx


def textbook(qh, kh, v, values, bias=None):
    """softmax_k(vᵀ tanh(q_i + k_j) + bias) · values with every tensor built whole."""
    t = torch.tanh(qh[:, :, :, None, :] + kh[:, :, None, :, :])  # (B, h, Nq, Nk, e)
    scores = torch.einsum("bhqke,he->bhqk", t, v)
    if bias is not None:
        scores = scores + bias
    return scores.softmax(dim=-1) @ values


class Bias:
    """A positional encoding stand-in whose score bias is a learned (h, Nq, Nk) tensor."""

    def __init__(self, bias):
        self.bias = bias

    def score_bias(self, nq, nk, ctx):
        return self.bias


def inputs(b, h, nq, nk, e, hd, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [
        torch.randn(*shape, generator=g, dtype=dtype).requires_grad_()
        for shape in ((b, h, nq, e), (b, h, nk, e), (b, h, nk, hd))
    ]


def test_gradcheck_through_the_recomputed_chunks():
    score = AdditiveScore(heads=2, hidden=3, chunk_size=2).double()
    qh, kh, values = inputs(2, 2, 5, 4, 3, 2)
    bias = torch.randn(2, 5, 4, dtype=torch.float64, requires_grad=True)

    def f(qh, kh, values, v, bias):
        return functional_call(score, {"v": v}, (qh, kh, values, Ctx(posenc=Bias(bias))))[0]

    v = score.v.detach().clone().requires_grad_()
    assert torch.autograd.gradcheck(f, (qh, kh, values, v, bias))


def test_chunked_values_and_gradients_equal_the_textbook_formula():
    """A moderate size in float64: 3 chunks of 40 queries (the last one short) over 96 keys."""
    score = AdditiveScore(heads=4, hidden=8, chunk_size=40).double()
    qh, kh, values = inputs(2, 4, 100, 96, 8, 16)
    bias = torch.randn(4, 100, 96, dtype=torch.float64, requires_grad=True)
    upstream = torch.randn(2, 4, 100, 16, dtype=torch.float64)

    ours = score(qh, kh, values, Ctx(posenc=Bias(bias)))[0]
    ours.backward(upstream)
    ours_grads = [t.grad.clone() for t in (qh, kh, values, score.v, bias)]
    for t in (qh, kh, values, score.v, bias):
        t.grad = None

    v = score.v.detach().requires_grad_()
    reference = textbook(qh, kh, v, values, bias)
    reference.backward(upstream)
    torch.testing.assert_close(ours, reference)
    for mine, theirs in zip(ours_grads, (qh.grad, kh.grad, values.grad, v.grad, bias.grad)):
        torch.testing.assert_close(mine, theirs)


def test_backward_replays_the_forward_dropout_mask():
    """With values = identity the output is the dropped-out weights themselves, so the
    gradient with respect to values must be yᵀ·upstream if backward drew the same mask."""
    torch.manual_seed(0)
    score = AdditiveScore(heads=2, hidden=4, chunk_size=3)
    nk = 10
    qh, kh, _ = inputs(1, 2, 8, nk, 4, 1, dtype=torch.float32)
    values = torch.eye(nk).expand(1, 2, nk, nk).clone().requires_grad_()
    y = score(qh, kh, values, Ctx(), dropout_p=0.5)[0]  # (1, 2, 8, nk): the kept weights
    assert (y == 0).any() and (y > 1 / nk).any()  # dropout dropped and rescaled some
    upstream = torch.randn_like(y)
    y.backward(upstream)
    torch.testing.assert_close(values.grad, y.detach().transpose(-2, -1) @ upstream)


def peak(n: int, chunk: int = 64) -> float:
    score = AdditiveScore(heads=1, hidden=4, chunk_size=chunk)
    qh, kh, values = inputs(1, 1, n, n, 4, 4, dtype=torch.float32)
    return cpu_peak_bytes(lambda: score(qh, kh, values, Ctx())[0].sum().backward())


def test_peak_memory_grows_like_n_not_n_squared():
    n = 2048
    weights_bytes = n * n * 4  # one (N, N) float32 tensor: what a whole softmax would hold
    small, large = peak(n // 2), peak(n)
    assert large < weights_bytes / 2
    assert large / small < 2.5  # linear growth ~2x; keeping the (N, N) weights would be ~4x
