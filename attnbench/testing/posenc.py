"""The positional-encoding contract: shapes, determinism, gradients, and then either an
absolute encoding's distinct rows per position or a relative encoding's scores that depend
on offsets only (and decode row by row)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from attnbench.nn.ctx import Ctx
from attnbench.nn.posenc import PositionalEncoding
from attnbench.testing._core import (
    B,
    Check,
    Failed,
    N,
    Property,
    Skipped,
    assert_close,
    assert_finite,
    assert_output,
    assert_shape,
    assert_within,
    build_module,
    diff,
    run_all,
    sizes,
)
from attnbench.testing._inputs import randn
from attnbench.testing._properties import finite_gradients, reproducible, skipped, subclasses


def check_posenc(cls: type, **params: Any) -> list[Check]:
    """The positional-encoding contract on ``cls`` (d_model=16, heads=2 if it takes heads)."""
    d, heads = sizes(params)
    supplied = {"d_model": d, "heads": heads}

    def build() -> nn.Module:
        return build_module("posenc", cls, supplied, params)

    hd = d // heads
    x = randn(B, N, d, seed=1)
    same = randn(1, 1, d, seed=2).expand(1, N, d)  # one vector at every position
    q, k = randn(B, heads, N, hd, seed=3), randn(B, heads, N, hd, seed=4)
    relative = bool(getattr(cls, "relative", False))

    def scores(pe: nn.Module, q: Tensor, k: Tensor, ctx: Ctx) -> Tensor:
        """(B, h, Nq, Nk) q·k after rotate, plus score_bias."""
        rq, rk = pe.rotate(q, k, ctx)
        assert_shape(rq, tuple(q.shape), "rotated q")
        assert_shape(rk, tuple(k.shape), "rotated k")
        s = rq @ rk.transpose(-2, -1)
        bias = pe.score_bias(q.size(-2), k.size(-2), ctx)
        return s if bias is None else s + bias

    def shapes() -> str:
        pe = build()
        assert_output(pe(x, Ctx()), (B, N, d), "forward output")
        positions = torch.arange(N)[None].expand(B, N) + 3
        assert_shape(pe(x, Ctx(positions=positions)), (B, N, d), "output with ctx.positions")
        return f"forward keeps {(B, N, d)}"

    def determinism() -> str:
        a, b = build(), build()
        detail = reproducible(a, b, lambda pe: pe(x, Ctx()))
        if relative:
            assert_close(scores(a, q, k, Ctx()), scores(b, q, k, Ctx()), "scores of two builds")
        return detail

    def gradients() -> str:
        pe = build()
        xg, qg, kg = (t.clone().requires_grad_(True) for t in (x, q, k))
        loss = (pe(xg, Ctx()) * randn(B, N, d, seed=5)).sum()
        inputs = [xg]
        if relative:
            loss = loss + (scores(pe, qg, kg, Ctx()) * randn(B, heads, N, N, seed=6)).sum()
            inputs += [qg, kg]
        loss.backward()
        return finite_gradients(pe, inputs)

    def encoding() -> nn.Module:
        """A fresh build; skips an encoding that adds nothing to the embeddings."""
        pe = build()
        if torch.equal(pe(same, Ctx()), same):
            raise Skipped("adds nothing to the embeddings (no positional information)")
        return pe

    def positions() -> str:
        out = encoding()(same, Ctx())[0]  # (N, d)
        gaps = torch.cdist(out, out) + torch.eye(N) * 1e9
        gap = float(gaps.min())
        if not gap > 1e-6:
            raise Failed(f"two positions get the same encoding (min distance {gap:.1e})")
        return f"{N} positions, {N} distinct rows (min distance {gap:.1e})"

    def ctx_positions() -> str:
        pe = encoding()
        order = torch.tensor([[3, 0, 4, 1, 2]])
        picked = pe(same, Ctx(positions=order))
        return assert_close(picked, pe(same, Ctx())[:, order[0]], "rows for explicit ctx.positions")

    def bias_shape() -> str:
        pe = build()
        shown = []
        for nq in (N, 2):
            bias = pe.score_bias(nq, N, Ctx())
            if bias is None:
                return "score_bias is None (rotation only)"
            want = (B, heads, nq, N)
            if bias.dim() > 4 or torch.broadcast_shapes(bias.shape, want) != want:
                raise Failed(f"score_bias {tuple(bias.shape)} does not broadcast to {want}")
            if bias.dim() == 4 and bias.size(1) not in (1, heads):
                raise Failed(f"score_bias has {bias.size(1)} heads; built with {heads}")
            assert_finite(bias, "score_bias")
            shown.append(str(tuple(bias.shape)))
        return f"score_bias {' and '.join(shown)} broadcast to (B, h, Nq, Nk)"

    def rotate_shapes() -> str:
        pe = build()
        scores(pe, q, k, Ctx())
        scores(pe, q[:, :, -2:], k, Ctx(causal=True))
        return f"rotate keeps q {tuple(q.shape)} and k {tuple(k.shape)}"

    def shift_invariance() -> str:
        pe = build()
        base = scores(pe, q, k, Ctx())
        worst = 0.0
        for shift in (1, 11):
            moved = Ctx(positions=torch.arange(N)[None].expand(B, N) + shift)
            worst = max(worst, diff(scores(pe, q, k, moved), base))
        tol = 1e-5 * (1 + float(base.abs().max()))  # rotations may run in float32
        measured = assert_within(worst, "scores change when every position shifts", tol)
        return f"{measured} for shifts 1 and 11"

    def offsets_matter() -> str:
        pe = build()
        qs, ks = (randn(1, 1, 1, hd, seed=s).expand(1, heads, N, hd) for s in (7, 8))
        s = scores(pe, qs, ks, Ctx())
        spread = float(s.max() - s.min())
        if not spread > 1e-6:
            raise Failed("the same q and k score alike at every offset: no position information")
        return f"scores of one q, k pair vary by {spread:.1e} across offsets"

    def decoding_rows() -> str:
        pe = build()
        full = scores(pe, q, k, Ctx(causal=True))
        last = scores(pe, q[:, :, -2:], k, Ctx(causal=True))
        return assert_close(last, full[..., -2:, :], "the last queries' scores (Nq < Nk)")

    props: list[Property] = [
        ("base", subclasses(cls, PositionalEncoding)),
        ("shapes", shapes),
        ("determinism", determinism),
        ("gradients", gradients),
    ]
    absolute = [("positions", positions), ("ctx_positions", ctx_positions)]
    relative_props = [
        ("rotate_shapes", rotate_shapes),
        ("score_bias_shape", bias_shape),
        ("shift_invariance", shift_invariance),
        ("offsets_matter", offsets_matter),
        ("decoding_rows", decoding_rows),
    ]
    # an absolute encoding is held to the first group, a relative one to the second
    reason = (
        "relative encoding: adds nothing to embeddings"
        if relative
        else "absolute encoding (relative = False)"
    )
    for group, applies in ((absolute, not relative), (relative_props, relative)):
        props += group if applies else [(name, skipped(reason)) for name, _ in group]
    return run_all(build, lambda _: props)
