"""The backbone contract (attnbench.testing.check_backbone): every built-in model conforms,
and deliberately broken backbones fail the property they break."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from attnbench import registry
from attnbench.nn.backbone import Backbone
from attnbench.nn.ctx import Ctx
from attnbench.registry import ConfigError
from attnbench.testing import assert_conforms, check_backbone, failed, main

# The tasks each built-in serves, stated here rather than read from its flags.
SKIPPED = {
    "transformer": set(),
    "rnn": {"graph"},
    "cnn": {"graph", "seq2seq"},
    "mlp": {"seq2seq"},
    "window_mlp": {"graph", "seq2seq"},
}


@pytest.mark.parametrize("name", registry.available("model"))
def test_every_builtin_backbone_conforms(name):
    checks = assert_conforms("model", name)
    skipped = {c.name for c in checks if c.status == "skip"}
    assert skipped == SKIPPED[name]
    assert {f"refuses_{s}" for s in skipped} <= {c.name for c in checks if c.status == "pass"}


@pytest.mark.parametrize(
    "name, attention",
    [("transformer", "linear"), ("transformer", "additive"), ("rnn", "additive")],
)
def test_encoder_decoders_conform_with_other_attentions(name, attention):
    """Linear attention decodes without a KV cache, additive with its own: both paths."""
    assert_conforms("model", name, attention=attention)
    assert_conforms("model", name, attention=registry.factory("attention", attention))


def test_what_the_chosen_attention_cannot_serve_is_skipped_or_refused():
    checks = {c.name: c for c in assert_conforms("model", "transformer", attention="truncated")}
    assert checks["seq2seq"].status == "skip"
    assert "does not declare supports_cross" in checks["seq2seq"].detail
    with pytest.raises(ConfigError, match="supports_relative_posenc"):
        check_backbone(registry.get("model", "transformer").cls, attention="linear", posenc="rope")


def test_backbone_parameters_reach_it():
    assert_conforms("model", "cnn", kernel_size=4, residual=False)
    assert_conforms("model", "rnn", cell="gru", bidirectional=False, layers=1)


# ----------------------------------------------------------------------------- mutants


class PerToken(Backbone):
    """A correct backbone (the control): one residual feed-forward layer per token."""

    supports_graph = True
    supports_grid = True
    supports_padding = True

    def __init__(self, d_model: int = 16):
        super().__init__()
        self.d_model = d_model
        self.ff = nn.Sequential(nn.Linear(d_model, d_model), nn.Tanh())

    def forward(self, x: Tensor, ctx: Ctx) -> Tensor:
        return x + self.ff(x)


class PoolsOverPadding(PerToken):
    """Adds the mean over *all* positions, pads included."""

    def forward(self, x, ctx):
        return super().forward(x, ctx) + x.mean(1, keepdim=True)


class ReadsTokenOrder(PerToken):
    """Claims graph support but adds each token's index."""

    def forward(self, x, ctx):
        return super().forward(x, ctx) + torch.arange(x.size(1), dtype=x.dtype)[:, None]


class WrongWidth(PerToken):
    def __init__(self, d_model: int = 16):
        super().__init__(d_model)
        self.d_model = 2 * d_model


class Dropped(PerToken):
    """Returns fewer positions than it was given."""

    def forward(self, x, ctx):
        return super().forward(x, ctx)[:, 1:]


class PrefixSums(PerToken):
    """A correct encoder-decoder (the control): the decoder's output at t is the running
    mean of the targets up to t plus the memory's mean; the cache carries the sums."""

    supports_seq2seq = True

    def encode(self, x, ctx):
        return self(x, ctx)

    def decode(self, y, memory, src_ctx, cache=None):
        total = cache["sum"] if cache else torch.zeros_like(y[:, :1])
        count = cache["count"] if cache else 0
        sums = total + y.cumsum(1)  # (B, T, d)
        counts = count + torch.arange(1, y.size(1) + 1, dtype=y.dtype)[:, None]
        h = sums / counts + memory.mean(1, keepdim=True)
        return h, {"sum": sums[:, -1:], "count": count + y.size(1)}


class ForgetsItsCache(PrefixSums):
    def decode(self, y, memory, src_ctx, cache=None):
        return super().decode(y, memory, src_ctx, None)


class ServesEverything(PerToken):
    """Declares no task structure and overrides the refusal away."""

    supports_graph = supports_grid = supports_padding = False

    @classmethod
    def check_task(cls, task):
        return None


class NotABackbone(nn.Module):
    def __init__(self, d_model: int = 16):
        super().__init__()
        self.d_model = d_model

    def forward(self, x, ctx):
        return x


@pytest.mark.parametrize("control", [PerToken, PrefixSums])
def test_the_controls_conform(control):
    assert_conforms("model", control)


@pytest.mark.parametrize(
    "mutant, broken",
    [
        (PoolsOverPadding, {"padding_invariance"}),
        (ReadsTokenOrder, {"graph"}),
        (WrongWidth, {"d_model"}),
        (Dropped, {"shapes"}),
        (ForgetsItsCache, {"seq2seq"}),
        (ServesEverything, {"refuses_graph", "refuses_grid", "refuses_padding"}),
        (NotABackbone, {"base", "refuses_padding"}),
    ],
    ids=lambda m: m.__name__ if isinstance(m, type) else "",
)
def test_a_broken_backbone_fails_the_property_it_breaks(mutant, broken):
    fails = failed(check_backbone(mutant))
    assert broken <= fails.keys(), fails
    with pytest.raises(AssertionError, match=sorted(broken)[0]):
        assert_conforms("model", mutant)


def test_padding_failure_reports_the_measured_change():
    detail = failed(check_backbone(PoolsOverPadding))["padding_invariance"]
    assert detail.startswith("real positions change with padding: max |Δ| ")
    assert float(detail.rsplit(" ", 1)[1]) > 0.1  # garbage pads are scaled by 10


def test_cli_refuses_a_combination_the_harness_would_refuse(capsys):
    assert main(["model", "transformer", "attention=linear", "posenc=rope"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "supports_relative_posenc" in err[0]
