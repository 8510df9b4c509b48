"""The positional-encoding contract (attnbench.testing.check_posenc): every built-in
encoding conforms, and deliberately broken encodings fail the property they break."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from attnbench import registry
from attnbench.nn.ctx import Ctx
from attnbench.nn.posenc import PositionalEncoding, query_key_positions
from attnbench.testing import assert_conforms, check_posenc, failed

ABSOLUTE_CHECKS = {"positions", "ctx_positions"}
RELATIVE_CHECKS = {
    "rotate_shapes",
    "score_bias_shape",
    "shift_invariance",
    "offsets_matter",
    "decoding_rows",
}
# Which family each built-in belongs to, stated here rather than read from `relative`.
SKIPPED = {
    "none": ABSOLUTE_CHECKS | RELATIVE_CHECKS,  # adds nothing: no position to check
    "sinusoidal": RELATIVE_CHECKS,
    "learned": RELATIVE_CHECKS,
    "rope": ABSOLUTE_CHECKS,
    "alibi": ABSOLUTE_CHECKS,
    "relative": ABSOLUTE_CHECKS,
}


@pytest.mark.parametrize("name", registry.available("posenc"))
def test_every_builtin_posenc_conforms(name):
    checks = assert_conforms("posenc", name)
    assert {c.name for c in checks if c.status == "skip"} == SKIPPED[name]


def test_per_head_biases_follow_the_head_count():
    assert_conforms("posenc", "alibi", heads=4)
    assert_conforms("posenc", "relative", heads=1, max_distance=2)


# ----------------------------------------------------------------------------- mutants


class DistanceBias(PositionalEncoding):
    """A correct relative encoding (the control): -0.1 · |i - j| on every head."""

    relative = True

    def __init__(self, d_model: int, heads: int):
        super().__init__(d_model)
        self.heads = heads

    def positions(self, ctx: Ctx, nq: int, nk: int) -> tuple[Tensor, Tensor]:
        return query_key_positions(ctx, nq, nk, torch.device("cpu"))

    def score_bias(self, nq: int, nk: int, ctx: Ctx) -> Tensor:
        pos_q, pos_k = self.positions(ctx, nq, nk)
        return -0.1 * (pos_q[:, None, :, None] - pos_k[:, None, None, :]).abs()  # (B|1,1,Nq,Nk)


class AbsoluteInDisguise(DistanceBias):
    """Claims relative, but the bias grows with the key's absolute position."""

    def score_bias(self, nq, nk, ctx):
        _, pos_k = self.positions(ctx, nq, nk)
        return -0.1 * pos_k[:, None, None, :].expand(-1, 1, nq, nk).double()


class QueriesFromZero(DistanceBias):
    """Counts queries from 0 even when they are the last of the keys (decoding)."""

    def positions(self, ctx, nq, nk):
        return torch.arange(nq)[None], torch.arange(nk)[None]


class BiasOfTheWrongShape(DistanceBias):
    def score_bias(self, nq, nk, ctx):
        return super().score_bias(nq, nk, ctx)[0, 0, :, :, None].expand(nq, nk, 3)


class NoBiasAtAll(DistanceBias):
    def score_bias(self, nq, nk, ctx):
        return None


class RandomBias(DistanceBias):
    def score_bias(self, nq, nk, ctx):
        return super().score_bias(nq, nk, ctx) + 1e-3 * torch.randn(1, 1, nq, nk)


class Sinusoid(PositionalEncoding):
    """A correct absolute encoding (the control): sin/cos of the position, from ctx."""

    def encoding(self, pos: Tensor) -> Tensor:
        freq = torch.arange(1, self.d_model + 1, dtype=torch.float64) / self.d_model
        return torch.sin(pos[..., None].double() * freq + torch.arange(self.d_model))

    def forward(self, x, ctx):
        pos = ctx.positions if ctx.positions is not None else torch.arange(x.size(1))[None]
        return x + self.encoding(pos).to(x.dtype)


class IgnoresCtxPositions(Sinusoid):
    def forward(self, x, ctx):
        return super().forward(x, Ctx())


class SameVectorEverywhere(Sinusoid):
    def forward(self, x, ctx):
        return x + self.encoding(torch.zeros(x.size(1)))[None].to(x.dtype)


class ChangesTheWidth(Sinusoid):
    def forward(self, x, ctx):
        return super().forward(x, ctx)[..., :-1]


@pytest.mark.parametrize("control", [DistanceBias, Sinusoid])
def test_the_controls_conform(control):
    assert_conforms("posenc", control)


@pytest.mark.parametrize(
    "mutant, broken",
    [
        (AbsoluteInDisguise, {"shift_invariance"}),
        (QueriesFromZero, {"decoding_rows"}),
        (BiasOfTheWrongShape, {"score_bias_shape"}),
        (NoBiasAtAll, {"offsets_matter"}),
        (RandomBias, {"determinism"}),
        (IgnoresCtxPositions, {"ctx_positions"}),
        (SameVectorEverywhere, {"positions"}),
        (ChangesTheWidth, {"shapes"}),
    ],
    ids=lambda m: m.__name__ if isinstance(m, type) else "",
)
def test_a_broken_posenc_fails_the_property_it_breaks(mutant, broken):
    fails = failed(check_posenc(mutant))
    assert broken <= fails.keys(), fails
    with pytest.raises(AssertionError, match=sorted(broken)[0]):
        assert_conforms("posenc", mutant)


def test_shift_failure_reports_the_measured_change():
    detail = failed(check_posenc(AbsoluteInDisguise))["shift_invariance"]
    # keys move by 1 and by 11 positions: the bias moves by 0.1 · 11
    assert float(detail.split("max |Δ| ")[1].split()[0]) == pytest.approx(1.1, rel=1e-6)
