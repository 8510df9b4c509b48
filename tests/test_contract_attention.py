"""The attention contract (attnbench.testing.check_attention): every built-in variant
conforms, and deliberately broken variants fail the property they break."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
import torch
from torch import Tensor, nn

from attnbench import registry
from attnbench.nn.attention import (
    Attention,
    decoding_kv,
    dense_mask,
    masked_softmax,
    merge_heads,
    split_heads,
)
from attnbench.nn.ctx import Ctx
from attnbench.testing import assert_conforms, check_attention, failed, main

# What each built-in declares, written down here (not read from the flags): a variant that
# drops a capability would otherwise just skip its checks and still "conform".
CAPABILITY_CHECKS = {
    "padding_mask",
    "padding_invariance",
    "causal_mask",
    "causal_future",
    "cross",
    "relative_score_bias",
    "relative_rotate",
    "kv_cache",
    "causal_prefix",
    "graph",
    "permutation",
}
SKIPPED = {
    "dot": {"graph"},
    "kernel": {"graph"},
    "multihead": {"graph"},
    "additive": {"graph"},
    "linear": {"relative_score_bias", "relative_rotate", "kv_cache", "graph"},
    "truncated": {"permutation", "cross", "kv_cache", "causal_prefix", "graph"},
    "graph": {"cross", "kv_cache", "causal_prefix"},
}


@pytest.mark.parametrize("name", registry.available("attention"))
def test_every_builtin_attention_conforms(name):
    checks = assert_conforms("attention", name)
    skipped = {c.name for c in checks if c.status == "skip"}
    assert skipped == SKIPPED[name]
    refusals = {c.name for c in checks if c.name.startswith("refuses_")}
    # every skipped capability is refused, not merely skipped
    for cap in ("cross", "kv_cache"):
        assert (cap in skipped) == (f"refuses_{cap}" in refusals)
    relative = {"relative_score_bias", "relative_rotate"}
    assert (relative <= skipped) == ("refuses_relative_posenc" in refusals)
    assert {c.name for c in checks} >= CAPABILITY_CHECKS - skipped  # each one ran
    if name == "graph":
        assert "refuses_no_edges" in refusals


@pytest.mark.parametrize("params", [{"score": "additive"}, {"heads": 4}, {"d_model": 8}])
def test_parameters_reach_the_variant(params):
    assert_conforms("attention", "multihead", **params)


# ----------------------------------------------------------------------------- mutants


class Honest(Attention):
    """A minimal, correct softmax attention: the control every mutant departs from."""

    supports_causal = True
    supports_cross = True
    supports_padding = True
    supports_relative_posenc = True
    supports_kv_cache = True

    def __init__(self, d_model: int, heads: int):
        super().__init__(d_model, heads)
        self.q_proj = nn.Linear(d_model, d_model)
        self.kv_proj = nn.Linear(d_model, 2 * d_model)
        self.out = nn.Linear(d_model, d_model)

    def project(self, query: Tensor, key: Tensor, value: Tensor, ctx: Ctx):
        q = split_heads(self.q_proj(query), self.heads)  # (B, h, Nq, hd)
        k, v = decoding_kv(
            ctx,
            lambda: (
                split_heads(self.kv_proj(key)[..., : self.d_model], self.heads),
                split_heads(self.kv_proj(value)[..., self.d_model :], self.heads),
            ),
        )
        return q, k, v

    def weights(self, q: Tensor, k: Tensor, ctx: Ctx) -> Tensor:
        if ctx.posenc is not None:
            q, k = ctx.posenc.rotate(q, k, ctx)
        scores = q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))  # (B, h, Nq, Nk)
        bias = ctx.posenc.score_bias(q.size(-2), k.size(-2), ctx) if ctx.posenc else None
        return masked_softmax(scores, dense_mask(ctx, q.size(-2), k.size(-2), q.device), bias)

    def forward(self, query, key, value, *, ctx=None, need_weights=False):
        ctx = ctx or Ctx()
        q, k, v = self.project(query, key, value, ctx)
        w = self.weights(q, k, ctx)
        return self.out(merge_heads(w @ v)), w if need_weights else None


class IgnoresPadding(Honest):
    def forward(self, query, key, value, *, ctx=None, need_weights=False):
        ctx = (ctx or Ctx()).replace(key_padding_mask=None)
        return super().forward(query, key, value, ctx=ctx, need_weights=need_weights)


class LeaksTheFuture(Honest):
    def forward(self, query, key, value, *, ctx=None, need_weights=False):
        ctx = (ctx or Ctx()).replace(causal=False)
        return super().forward(query, key, value, ctx=ctx, need_weights=need_weights)


class Unnormalised(Honest):
    def weights(self, q, k, ctx):
        return super().weights(q, k, ctx) * 0.9


class Noisy(Honest):
    def forward(self, query, key, value, *, ctx=None, need_weights=False):
        out, w = super().forward(query, key, value, ctx=ctx, need_weights=need_weights)
        return out + 1e-3 * torch.randn_like(out), w


class IgnoresRelativePosenc(Honest):
    def forward(self, query, key, value, *, ctx=None, need_weights=False):
        ctx = (ctx or Ctx()).replace(posenc=None)
        return super().forward(query, key, value, ctx=ctx, need_weights=need_weights)


class ForgetsTheCache(Honest):
    def project(self, query, key, value, ctx):
        return super().project(query, key, value, ctx.replace(kv_cache=None))


class OrderLeaks(Honest):
    """Adds each token's index to its output without declaring order_aware."""

    def forward(self, query, key, value, *, ctx=None, need_weights=False):
        out, w = super().forward(query, key, value, ctx=ctx, need_weights=need_weights)
        return out + torch.arange(out.size(1), dtype=out.dtype)[:, None], w


class NaNGradient(Honest):
    """A finite output whose gradient is NaN: 0 · sqrt(0) has derivative 0 · inf."""

    def forward(self, query, key, value, *, ctx=None, need_weights=False):
        out, w = super().forward(query, key, value, ctx=ctx, need_weights=need_weights)
        return out + 0 * torch.sqrt(query - query), w


class SelfOnlyCross(Honest):
    """Claims cross-attention but attends the queries instead of the keys."""

    def forward(self, query, key, value, *, ctx=None, need_weights=False):
        return super().forward(query, query, query, ctx=ctx, need_weights=need_weights)


class DenseGraph(Honest):
    """Claims to attend along edges but attends every node."""

    supports_cross = supports_kv_cache = False
    needs_graph = True


class ServesWhatItDoesNotDeclare(Honest):
    """Declares nothing and removes the base class's call-time guard: undeclared uses run."""

    supports_causal = supports_cross = supports_padding = False
    supports_relative_posenc = supports_kv_cache = False

    def __init__(self, d_model: int, heads: int):
        super().__init__(d_model, heads)
        self._forward_pre_hooks.clear()

    @classmethod
    def check_use(cls, **uses):
        return None


class NotAnAttention(nn.Module):
    """Follows the call contract but does not subclass Attention."""

    def __init__(self, d_model: int, heads: int):
        super().__init__()
        self.inner = Honest(d_model, heads)

    def forward(self, query, key, value, *, ctx=None, need_weights=False):
        return self.inner(query, key, value, ctx=ctx, need_weights=need_weights)


def test_the_control_conforms():
    checks = assert_conforms("attention", Honest)
    assert {c.name for c in checks if c.status == "skip"} == {"graph"}


@pytest.mark.parametrize(
    "mutant, broken",
    [
        (IgnoresPadding, {"padding_mask", "padding_invariance"}),
        (LeaksTheFuture, {"causal_mask", "causal_future", "kv_cache"}),
        (Unnormalised, {"weights_sum_to_1"}),
        (Noisy, {"determinism"}),
        (IgnoresRelativePosenc, {"relative_score_bias", "relative_rotate"}),
        (ForgetsTheCache, {"kv_cache"}),
        (OrderLeaks, {"permutation"}),
        (NaNGradient, {"gradients"}),
        (SelfOnlyCross, {"cross"}),
        (DenseGraph, {"graph"}),
        (
            ServesWhatItDoesNotDeclare,
            {
                "refuses_causal",
                "refuses_cross",
                "refuses_padding",
                "refuses_relative_posenc",
                "refuses_kv_cache",
            },
        ),
        (NotAnAttention, {"base", "refuses_cross"}),
    ],
    ids=lambda m: m.__name__ if isinstance(m, type) else "",
)
def test_a_broken_variant_fails_the_property_it_breaks(mutant, broken):
    fails = failed(check_attention(mutant))
    assert broken <= fails.keys(), fails
    with pytest.raises(AssertionError, match=sorted(broken)[0]):
        assert_conforms("attention", mutant)


def test_a_failure_states_the_measured_error():
    detail = failed(check_attention(IgnoresPadding))["padding_mask"]
    assert "disallowed keys get weight up to" in detail
    leak = float(detail.split("up to ")[1].split()[0])
    assert 0 < leak < 1


def test_a_constructor_that_crashes_fails_the_build_line():
    class Crashes(Honest):
        def __init__(self, d_model: int, heads: int):
            raise RuntimeError("boom")

    checks = check_attention(Crashes)
    assert [(c.name, c.status) for c in checks] == [("build", "fail")]
    assert "RuntimeError: boom" in checks[0].detail


def test_the_checker_leaves_the_callers_random_state_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    check_attention(Honest)
    assert torch.equal(torch.rand(3), expected)


# ----------------------------------------------------------------------------- CLI


def test_cli_passes_dot(capsys):
    assert main(["attention", "dot"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:2] == ["PASS", "base"]
    assert any(line.split()[:2] == ["PASS", "padding_invariance"] for line in out)
    assert any(line.split()[:2] == ["SKIP", "graph"] for line in out)
    assert out[-1].startswith("attention 'dot': ") and "0 failed" in out[-1]


def test_cli_exits_1_on_a_broken_plugin(capsys, monkeypatch):
    registry.discover()
    plugin = registry.Plugin("attention", "leaky", LeaksTheFuture, "code tests")
    monkeypatch.setitem(registry._state.plugins["attention"], "leaky", plugin)
    assert main(["attention", "leaky"]) == 1
    out = capsys.readouterr().out.splitlines()
    assert any(line.split()[:2] == ["FAIL", "causal_future"] for line in out)
    assert "failed" in out[-1] and " 0 failed" not in out[-1]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["attention", "dott"], "unknown attention 'dott'"),
        (["kernel", "dot"], "unknown plugin kind 'kernel'"),
        (["attention", "dot", "windoww=3"], "no parameter 'windoww'"),
        (["attention", "dot", "dropout=abc"], "dropout"),
        (["attention", "dot", "heads=0"], "heads"),
        (["attention", "dot", "heads=3"], "not divisible"),
        (["attention"], "needs a kind and a name"),
    ],
)
def test_cli_bad_input_exits_2_with_one_line(capsys, argv, message):
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("attnbench: error: ")
    assert message in lines[0]


def test_the_checker_imports_without_lightning():
    code = (
        "import sys, attnbench.testing; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('pytorch_lightning', 'lightning', 'hydra')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
