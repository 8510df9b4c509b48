"""Synthetic long-range tasks: the adding problem and ListOps."""

from __future__ import annotations

import random
import statistics

import pytest
import torch
from attnbench.plugins.tasks.longrange import (
    CLOSE,
    adding_problem,
    listops_expression,
    sum_bin_edges,
)
from conftest import fast_dev_run

from attnbench import registry
from attnbench.nn.ctx import Ctx
from attnbench.registry import ConfigError


def task(**params):
    t = registry.build("task", "longrange", data_dir=".", train_size=64, eval_size=32, **params)
    t.setup()
    return t


def test_adding_problem_markers_and_labels():
    x, y = adding_problem(500, 40, bins=10, seed=0)
    assert x.shape == (500, 40, 2) and y.shape == (500,)
    markers = x[..., 1]
    assert torch.equal(markers.sum(1), torch.full((500,), 2.0))
    first, second = markers[:, :20].argmax(1), markers[:, 20:].argmax(1) + 20
    assert torch.equal(markers[:, :20].sum(1), torch.ones(500))  # one marker per half
    rows = torch.arange(500)
    total = x[rows, first, 0] + x[rows, second, 0]
    edges = sum_bin_edges(10)
    assert torch.equal(y, (total[:, None] > edges).sum(1))  # the bin of the sum
    assert torch.equal(adding_problem(500, 40, 10, seed=0)[1], y)  # deterministic


def test_sum_bins_have_equal_mass():
    edges = sum_bin_edges(4)
    assert torch.allclose(edges, torch.tensor([2**-0.5, 1.0, 2 - 2**-0.5]))
    _, y = adding_problem(20000, 8, bins=5, seed=1)
    counts = torch.bincount(y, minlength=5).float() / 20000
    assert torch.allclose(counts, torch.full((5,), 0.2), atol=0.02)


def evaluate(tokens: list[str]) -> int:
    """An independent stack evaluator of a ListOps token list."""
    ops = {
        "[MAX": max,
        "[MIN": min,
        "[SM": lambda a: sum(a) % 10,
        "[MED": lambda a: int(statistics.median(a)),
    }
    stack: list = []
    for t in tokens:
        if t == CLOSE:
            args = []
            while not isinstance(stack[-1], str):
                args.append(stack.pop())
            stack.append(ops[stack.pop()](args))
        else:
            stack.append(int(t) if t.isdigit() else t)
    (value,) = stack
    return value


@pytest.mark.parametrize("max_tokens", [4, 9, 64, 300])
def test_listops_expressions_fit_and_evaluate(max_tokens):
    rng = random.Random(max_tokens)
    for _ in range(200):
        tokens, value = listops_expression(rng, max_tokens)
        assert 4 <= len(tokens) <= max_tokens and tokens[-1] == CLOSE
        assert tokens.count(CLOSE) == sum(t.startswith("[") for t in tokens)
        assert value == evaluate(tokens)


def test_listops_lengths_grow_with_length_and_batches_are_trimmed():
    t = task(dataset="listops", length=100)
    lengths = t.splits["train"].tensors["lengths"]
    assert lengths.max() <= 100 and lengths.float().mean() > 50
    b = next(iter(t.dataloader("val")))
    assert b["tokens"].size(1) == int(b["lengths"].max())  # trimmed to the batch's longest
    x, ctx = t.build_embedder(16)(b)
    assert torch.equal(ctx.key_padding_mask.sum(1), b["lengths"])


def test_last_pooling_picks_the_last_real_position():
    t = task(dataset="listops", pooling="last")
    h = torch.randn(2, 5, 3)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    hd = t.build_head(3)
    out = hd(h, Ctx(key_padding_mask=mask))
    expected = hd.proj(torch.stack([h[0, 2], h[1, 4]]))
    assert torch.allclose(out, expected)
    mean = task(dataset="listops").build_head(3)
    mean.proj = hd.proj
    assert torch.allclose(mean(h, Ctx(key_padding_mask=mask))[0], hd.proj(h[0, :3].mean(0)))


def test_bad_params():
    with pytest.raises(ConfigError, match="task.length=1"):
        task(length=1)
    with pytest.raises(ConfigError, match="pooling"):
        task(pooling="max")


@pytest.mark.parametrize("extra", [[], ["task.dataset=listops", "task.length=64"]])
def test_longrange_fast_dev_run(tmp_path, extra):
    summary = fast_dev_run(
        ["task=longrange", "model=transformer", "task.train_size=256", "task.eval_size=64", *extra],
        tmp_path,
    )
    assert 0.0 <= summary["metrics"]["test/acc"] <= 1.0 and "test/f1" in summary["metrics"]


def test_the_harness_sets_the_task_up_once(tmp_path, monkeypatch):
    """Once, before the model is built: not again when Lightning fits, validates and tests."""
    cls = registry.get("task", "longrange").cls
    real_setup, calls = cls.setup, []

    def setup(self):
        calls.append(self)
        real_setup(self)

    monkeypatch.setattr(cls, "setup", setup)
    summary = fast_dev_run(
        ["task=longrange", "model=mlp", "task.train_size=64", "task.eval_size=32"], tmp_path
    )
    assert "test/acc" in summary["metrics"]  # the run went through fit and test
    assert len(calls) == 1
