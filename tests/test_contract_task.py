"""The task contract (attnbench.testing.check_task): every built-in task conforms on its
built-in data, and deliberately broken tasks fail the property they break."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

from attnbench import registry
from attnbench.testing import assert_conforms, check_task, failed, main

# Small data where a task has a size knob (the checker reads one batch per split).
SMALL = {
    "image": {"batch_size": 8},
    "speech": {"synthetic_takes": 11, "batch_size": 8},
    "longrange": {"train_size": 64, "eval_size": 32, "length": 32},
    "pos": {"batch_size": 8},
    "sentiment": {"batch_size": 8},
    "translation": {"batch_size": 8},
}
# What each built-in's embedder must put in ctx, stated here rather than read from its flags.
CTX = {
    "graph": ("gives_edges", "grid False", "pads False"),
    "regression": ("gives_edges False", "grid False", "pads False"),
    "speech": ("gives_edges False", "grid False", "pads, key_padding_mask"),
    "image": ("gives_edges False", "grid, ", "pads False"),
    "longrange": ("gives_edges False", "grid False", "pads False"),
    "pos": ("gives_edges False", "grid False", "pads, key_padding_mask"),
    "sentiment": ("gives_edges False", "grid False", "pads, key_padding_mask"),
    "translation": ("gives_edges False", "grid False", "pads, key_padding_mask"),
}


@pytest.mark.parametrize("name", registry.available("task"))
def test_every_builtin_task_conforms(name):
    checks = {c.name: c for c in assert_conforms("task", name, **SMALL.get(name, {}))}
    assert not [c for c in checks.values() if c.status == "skip"]
    for prop, expected in zip(("ctx_edges", "ctx_grid", "ctx_padding"), CTX[name]):
        assert checks[prop].detail.startswith(expected), checks[prop]


def test_regression_conforms_with_average_pooling_too():
    # at its defaults it pools with the stand-in backbone's attention layer (needs_attention)
    checks = assert_conforms("task", "regression", pooling="average")
    assert next(c for c in checks if c.name == "metrics").detail.startswith("mse ")


def test_listops_pads_and_conforms():
    checks = assert_conforms("task", "longrange", dataset="listops", length=16, train_size=32)
    ctx_padding = next(c for c in checks if c.name == "ctx_padding")
    assert ctx_padding.detail.startswith("pads, key_padding_mask")


# ----------------------------------------------------------------------------- mutants

Sentiment = registry.get("task", "sentiment").cls
LongRange = registry.get("task", "longrange").cls
NodeClassification = registry.get("task", "graph").cls
FAST = {"batch_size": 8}


class ClaimsNoPadding(Sentiment):
    pads = False  # but its token embedder gives a key padding mask


class DropsItsEdges(NodeClassification):
    def build_embedder(self, d_model):
        inner = super().build_embedder(d_model)

        class NoEdges(nn.Module):
            def __init__(self):
                super().__init__()
                self.inner = inner

            def forward(self, batch):
                x, ctx = self.inner(batch)
                return x, ctx.replace(edges=None)

        return NoEdges()


class LossPerExample(Sentiment):
    def loss(self, logits, batch):
        return nn.functional.cross_entropy(logits, batch["label"], reduction="none")


class MonitorsAMissingMetric(Sentiment):
    monitor = "val/accuracy"


class CountsAsTensor(Sentiment):
    def num_samples(self, batch):
        return batch["tokens"].new_tensor(batch["tokens"].size(0))


class ClaimsAGrid(LongRange):
    grid = True  # but its positions are not (B, N, 2)


class UnseededShuffle(LongRange):
    def dataloader(self, split):
        g = torch.Generator()
        g.seed()  # from the operating system's entropy: differs on every call
        return DataLoader(self.splits[split], batch_size=8, shuffle=True, generator=g)


class WrongWidthEmbedder(Sentiment):
    def build_embedder(self, d_model):
        return super().build_embedder(d_model + 1)


class SetupFails(Sentiment):
    def setup(self):
        raise OSError("data not found")


LONGRANGE_SMALL = {"train_size": 64, "eval_size": 32, "length": 16}


@pytest.mark.parametrize(
    "mutant, params, broken",
    [
        (ClaimsNoPadding, FAST, {"ctx_padding"}),
        (DropsItsEdges, {}, {"ctx_edges"}),
        (LossPerExample, FAST, {"loss"}),
        (MonitorsAMissingMetric, FAST, {"metrics"}),
        (CountsAsTensor, FAST, {"num_samples"}),
        (ClaimsAGrid, LONGRANGE_SMALL, {"ctx_grid"}),
        (UnseededShuffle, LONGRANGE_SMALL, {"determinism"}),
        (WrongWidthEmbedder, FAST, {"embedder"}),
        (SetupFails, FAST, {"setup", "batches", "loss", "metrics"}),
    ],
    ids=lambda m: m.__name__ if isinstance(m, type) else "",
)
def test_a_broken_task_fails_the_property_it_breaks(mutant, params, broken):
    fails = failed(check_task(mutant, **params))
    assert broken <= fails.keys(), fails
    with pytest.raises(AssertionError, match=sorted(broken)[0]):
        assert_conforms("task", mutant, **params)


def test_setup_failure_names_the_error_and_stops_the_rest():
    fails = failed(check_task(SetupFails, **FAST))
    assert fails["setup"] == "raised OSError: data not found"
    assert fails["batches"] == "not checked: setup failed"


def test_cli_checks_a_task_with_parameters(capsys):
    assert main(["task", "longrange", "train_size=64", "eval_size=32", "length=16"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[-1].startswith("task 'longrange': 11 passed, 0 failed")


def test_cli_refuses_a_bad_task_parameter(capsys):
    assert main(["task", "longrange", "train_size=many"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("attnbench: error: ") and "train_size" in err[0]
