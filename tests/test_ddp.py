"""DDP: attnbench's samplers shard each epoch across processes (each example exactly once),
and a 2-process gloo run writes one summary/result whose synced metrics equal a
single-process evaluation of the same weights; resuming under DDP continues the run."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
import torch
from conftest import cli
from torch.utils.data import BatchSampler

from attnbench.data.batching import (
    BucketBatchSampler,
    EpochShuffle,
    ShuffledBatchSampler,
    shard_batches,
)
from attnbench.registry import ConfigError


def _shards(sampler, world: int) -> list[list[list[int]]]:
    shards = []
    for rank in range(world):
        sampler.rank, sampler.world = rank, world
        shards.append(list(sampler))
    return shards


def _samplers(n: int, batch_size: int, shuffle: bool, seed: int = 3):
    lengths = torch.randint(1, 40, (n,), generator=torch.Generator().manual_seed(n))
    return [
        ShuffledBatchSampler(n, batch_size, shuffle, seed),
        BucketBatchSampler(lengths, batch_size, shuffle, seed, pool=3),
    ]


@pytest.mark.parametrize(
    "n, batch_size, world", [(100, 8, 2), (101, 8, 2), (97, 10, 3), (17, 16, 2), (64, 8, 4)]
)
@pytest.mark.parametrize("shuffle", [True, False])
def test_each_example_once_per_epoch_across_ranks(n, batch_size, world, shuffle):
    for sampler in _samplers(n, batch_size, shuffle):
        epochs = []
        for epoch in (0, 1):
            if sampler.sampler is not None:
                sampler.sampler.set_epoch(epoch)
            shards = _shards(sampler, world)
            # DDP steps in lockstep: every rank gets as many batches as len() promised
            assert {len(s) for s in shards} == {len(sampler)}
            assert all(len(batch) >= 1 for s in shards for batch in s)
            seen = Counter(i for s in shards for batch in s for i in batch)
            assert seen == Counter(range(n)), "an example was repeated or dropped"
            assert all(len(b) <= batch_size for s in shards for b in s)
            epochs.append(shards)
        if shuffle:
            assert epochs[0] != epochs[1], "the epoch did not reshuffle"


def test_one_process_keeps_torchs_batches():
    """Outside DDP the batches are exactly torch's BatchSampler over the epoch's shuffle."""
    sampler = ShuffledBatchSampler(50, 8, shuffle=True, seed=7)
    sampler.sampler.set_epoch(2)
    reference = EpochShuffle(50, seed=7)
    reference.set_epoch(2)
    assert list(sampler) == list(BatchSampler(reference, 8, drop_last=False))


def test_round_robin_of_eval_shards_is_data_order():
    """Predictions are gathered batch by batch from the ranks: interleaving the shards
    must give the single-process order back."""
    batches = list(torch.arange(23).split(4))  # 6 batches: not a multiple of 4 ranks
    shards = [shard_batches(batches, rank, 4) for rank in range(4)]
    joined = [b for group in zip(*shards, strict=True) for b in group]
    assert torch.cat(joined).tolist() == list(range(23))


def test_too_few_examples_for_the_processes_is_one_line():
    sampler = ShuffledBatchSampler(3, 1, shuffle=True, seed=0)
    sampler.rank, sampler.world = 0, 2
    with pytest.raises(ConfigError, match="3 examples cannot be shared by 2 processes"):
        len(sampler)


QUICK = [
    "experiment=sentiment_quick",
    "trainer.max_epochs=2",
    "optim.scheduler=none",  # constant lr: a 1-epoch run resumed to 2 equals a 2-epoch run
    "trainer.limit_train_batches=12",
]


def _ddp(run_dir: Path, *extra: str):
    result = cli(
        *QUICK, "trainer=ddp_cpu", *extra, f"hydra.run.dir={run_dir}",
        env={"OMP_NUM_THREADS": "1"}, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def _single_process_metrics(run_dir: Path) -> dict[str, float]:
    """Evaluate the run's saved weights in this one process, without Lightning."""
    from torchmetrics import MetricCollection

    from attnbench.analysis.loading import load_run

    run = load_run(run_dir)
    found = {}
    with torch.no_grad():
        for split in ("val", "test"):
            metrics = MetricCollection(run.task.metrics())
            loss_sum, count = 0.0, 0
            for batch in run.task.dataloader(split):
                out = run.task.forward(run.net, batch, split)
                n = run.task.num_samples(batch)
                loss_sum += float(run.task.loss(out, batch)) * n
                count += n
                metrics.update(*run.task.metric_inputs(out, batch))
            found.update({f"{split}/{k}": float(v) for k, v in metrics.compute().items()})
            found[f"{split}/loss"] = loss_sum / count
    return found


def test_two_gloo_processes_write_once_and_match_one_process(tmp_path):
    whole = tmp_path / "whole"
    result = _ddp(whole)
    assert result.stdout.count("result:") == 1, result.stdout
    summary = json.loads((whole / "summary.json").read_text())
    assert summary["status"] == "ok" and summary["world_size"] == 2
    # one process wrote the run: no per-rank copies of checkpoints or summaries
    assert sorted(p.name for p in (whole / "checkpoints").iterdir()) == ["last.ckpt"]
    assert not list(whole.rglob("*rank*"))

    single = _single_process_metrics(whole)
    for key in ("val/acc", "val/f1", "test/acc", "test/f1"):
        assert summary["metrics"][key] == pytest.approx(single[key], abs=1e-6), key
    for key in ("val/loss", "test/loss"):
        assert summary["metrics"][key] == pytest.approx(single[key], rel=1e-5), key


@pytest.mark.slow  # three 2-process runs: about 90 s on the loaded 2-core machine
def test_resume_under_ddp_equals_the_run_that_went_through(tmp_path):
    """One epoch, then resumed from its last.ckpt to two, equals the run that went
    through (the same batches on each rank, reseeded each step)."""
    whole = tmp_path / "whole"
    _ddp(whole)
    summary = json.loads((whole / "summary.json").read_text())
    first = tmp_path / "first"
    _ddp(first, "trainer.max_epochs=1")
    resumed = tmp_path / "resumed"
    _ddp(resumed, f"ckpt_path={first / 'checkpoints' / 'last.ckpt'}")
    again = json.loads((resumed / "summary.json").read_text())
    assert again["metrics"] == summary["metrics"]


@pytest.mark.slow  # two jobs of two processes each
def test_ddp_jobs_of_a_multirun_each_run_their_own_job(tmp_path):
    """Lightning re-launches the script for rank 1: in a sweep it must run that job (its
    overrides, its directory), and the next job must start processes of its own."""
    sweep = tmp_path / "sweep"
    result = cli(
        "-m", *QUICK, "trainer=ddp_cpu", "trainer.max_epochs=1", "seed=1,2",
        f"hydra.sweep.dir={sweep}", env={"OMP_NUM_THREADS": "1"}, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = sorted(p.parent for p in sweep.glob("*/summary.json"))
    assert len(jobs) == 2 and result.stdout.count("result:") == 2
    seeds = [json.loads((job / "summary.json").read_text())["seed"] for job in jobs]
    assert seeds == [1, 2]
    assert all(json.loads((j / "summary.json").read_text())["world_size"] == 2 for j in jobs)
    assert sorted(p.name for p in sweep.iterdir()) == sorted(
        [*(j.name for j in jobs), "multirun.yaml"]
    )


def test_every_rank_stops_when_one_diverges():
    """Rank 1's loss is finite but rank 0's is NaN: rank 1 must stop too (alone, rank 0's
    exception would leave it waiting in the next gradient all-reduce)."""
    from types import SimpleNamespace

    from attnbench.callbacks import Diverged, StopOnDivergence

    def trainer(some_rank_bad: bool):
        decide = lambda bad, all=True: bad or some_rank_bad  # noqa: E731 - the all-reduce
        return SimpleNamespace(
            strategy=SimpleNamespace(reduce_boolean_decision=decide),
            current_epoch=0,
            global_step=7,
        )

    finite = {"loss": torch.tensor(0.5)}
    StopOnDivergence().on_train_batch_end(trainer(False), None, finite, None, 0)  # no one: goes on
    with pytest.raises(Diverged, match="step 7"):
        StopOnDivergence().on_train_batch_end(trainer(True), None, finite, None, 0)


def test_a_ddp_child_keeps_the_primary_config_and_runs_one_job():
    from attnbench.distributed import child_argv

    argv = ["attnbench", "-m", "--config-dir", "sweep", "-cn=best", "trainer=ddp_cpu", "seed=1,2"]
    child = child_argv(argv, ["trainer=ddp_cpu", "seed=2"])
    assert child == [
        "attnbench",
        "--config-dir",
        "sweep",
        "-cn=best",
        "trainer=ddp_cpu",
        "seed=2",
        "hydra.mode=RUN",
    ]


def test_a_ddp_child_of_a_search_composes_one_run_not_a_search():
    """hparams_search presets set hydra.mode=MULTIRUN; the child's hydra.mode=RUN wins."""
    from hydra import compose, initialize_config_module
    from hydra.types import RunMode

    from attnbench.config import register_resolvers, store_plugins
    from attnbench.distributed import child_argv

    store_plugins()
    register_resolvers()
    overrides = child_argv(["attnbench"], ["hparams_search=transformer", "optim.lr=0.001"])[1:]
    with initialize_config_module("attnbench.conf", version_base="1.3"):
        cfg = compose("config", overrides=overrides, return_hydra_config=True)
    assert cfg.hydra.mode == RunMode.RUN
    assert cfg.optim.lr == 0.001


def test_each_rank_draws_its_own_dropout_masks_but_shuffles_alike_between_steps():
    from types import SimpleNamespace

    from attnbench.data.batching import batched_loader
    from attnbench.lit import ReseedEachStep

    def step(rank: int, step: int) -> tuple[torch.Tensor, list]:
        trainer, reseed = SimpleNamespace(global_step=step, global_rank=rank), ReseedEachStep(3)
        reseed.on_train_batch_start(trainer, None, None, 0)
        masks = torch.nn.functional.dropout(torch.ones(64), p=0.5)
        reseed.on_train_batch_end(trainer, None, None, None, 0)
        # a loader built between steps (reloaded at an epoch's end) sees the same seed
        loader = batched_loader(list(range(40)), 8, train=True, collate_fn=None)
        return masks, list(loader.batch_sampler)

    (masks0, order0), (masks1, order1) = step(rank=0, step=5), step(rank=1, step=5)
    assert not torch.equal(masks0, masks1)
    assert order0 == order1 and order0 != [list(range(i, i + 8)) for i in range(0, 40, 8)]
    assert torch.equal(step(rank=1, step=5)[0], masks1)  # a pure function of (seed, step, rank)
    assert not torch.equal(step(rank=0, step=6)[0], masks0)
