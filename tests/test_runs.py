"""End-to-end runs through the real harness: resume, determinism, loggers, sweeps."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from conftest import cli, compose, fast_dev_run
from pytorch_lightning.callbacks import Callback

from attnbench.cli import train_task
from attnbench.train import run

SMALL = [
    "model.d_model=32",
    "model.heads=2",
    "model.layers=1",
    "task.batch_size=32",
    "trainer.accelerator=cpu",
    "trainer.limit_train_batches=6",
    "trainer.limit_val_batches=3",
    "trainer.limit_test_batches=3",
    "optim.warmup_steps=2",
]


class StopAfterFirstEpoch(Callback):
    """Simulates an interrupted run: stop cleanly after epoch 0 (last.ckpt is written)."""

    def on_train_epoch_end(self, trainer, pl_module):
        trainer.should_stop = True


def _metrics(summary):
    return {k: v for k, v in summary["metrics"].items() if k.startswith(("val/", "test/"))}


def test_same_seed_same_metrics_and_resume_matches(tmp_path):
    full = run(
        compose([*SMALL, "trainer.max_epochs=2", "logger=none", "seed=3"], tmp_path / "full")
    )
    again = run(
        compose([*SMALL, "trainer.max_epochs=2", "logger=none", "seed=3"], tmp_path / "again")
    )
    assert _metrics(full) == _metrics(again)  # same seed, same metrics on CPU

    stop = f"+callbacks.stop._target_={__name__}.StopAfterFirstEpoch"
    run(
        compose([*SMALL, "trainer.max_epochs=2", "logger=none", "seed=3", stop], tmp_path / "part1")
    )
    ckpt = tmp_path / "part1" / "checkpoints" / "last.ckpt"
    assert ckpt.is_file()
    resumed = run(
        compose(
            [*SMALL, "trainer.max_epochs=2", "logger=none", "seed=3", f"ckpt_path={ckpt}"],
            tmp_path / "part2",
        )
    )
    assert _metrics(resumed) == pytest.approx(_metrics(full), abs=1e-6)
    assert _metrics(full) != _metrics(
        run(compose([*SMALL, "trainer.max_epochs=2", "logger=none", "seed=4"], tmp_path / "other"))
    )


def test_summary_contents(tmp_path):
    summary = run(compose([*SMALL, "trainer.max_epochs=1", "seed=5"], tmp_path))
    on_disk = json.loads((tmp_path / "summary.json").read_text())
    assert on_disk == json.loads(json.dumps(summary))
    for key in ("val/acc", "val/f1", "test/acc", "test/f1"):
        assert 0.0 <= summary["metrics"][key] <= 1.0
    assert summary["params"] > 1000 and summary["seed"] == 5
    assert summary["train_samples_per_s"] > 0 and summary["wall_seconds"] > 0
    assert summary["peak_memory_mb"] > 0
    assert "seed=5" in summary["overrides"] or summary["overrides"] == []
    assert {"torch", "pytorch-lightning", "hydra-core", "attnbench"} <= set(summary["versions"])
    assert summary["plugins"]["attention"]["name"] == "dot"
    assert (
        (tmp_path / "csv" / "metrics.csv")
        .read_text()
        .startswith(("epoch", "step", "test", "train", "val"))
    )
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file()


def test_train_task_returns_the_optimized_metric(tmp_path):
    cfg = compose(
        [*SMALL, "trainer.max_epochs=1", "logger=none", "optimized_metric=val/f1"], tmp_path
    )
    value = train_task(cfg)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert value == summary["metrics"]["val/f1"]


def test_wandb_offline_without_account_and_finished(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc: not logged in
    monkeypatch.setenv("NETRC", str(tmp_path / "none"))
    run(compose([*SMALL, "trainer.max_epochs=1", "logger=wandb"], tmp_path / "run"))
    wandb = sys.modules["wandb"]
    assert wandb.run is None  # finished
    offline = list((tmp_path / "run" / "wandb").glob("offline-run-*"))
    assert len(offline) == 1 and list(offline[0].glob("*.wandb"))


def test_tensorboard_logger(tmp_path):
    run(compose([*SMALL, "trainer.max_epochs=1", "logger=tensorboard"], tmp_path))
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))


def test_fast_dev_run_default(tmp_path):
    summary = fast_dev_run([], tmp_path)
    assert set(summary["metrics"]) >= {"val/acc", "test/acc", "train/loss"}


def test_multirun_sweep(tmp_path):
    result = cli(
        "-m",
        "posenc=none,learned",
        "trainer.fast_dev_run=true",
        "logger=none",
        f"hydra.sweep.dir={tmp_path}",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    summaries = [json.loads(p.read_text()) for p in sorted(tmp_path.glob("*/summary.json"))]
    assert sorted(s["plugins"]["posenc"]["name"] for s in summaries) == ["learned", "none"]


def test_cfg_job_and_help_list_plugins():
    cfg = cli("attention=dot", "posenc=learned", "posenc.max_len=64", "--cfg", "job")
    assert cfg.returncode == 0, cfg.stderr
    assert "posenc:\n  _name_: learned\n  max_len: 64" in cfg.stdout
    helped = cli("--help")
    assert helped.returncode == 0
    for line in ("attention: ", "posenc: ", "model: ", "task: ", "trainer: ", "logger: "):
        assert line in helped.stdout
    [posenc_line] = [ln for ln in helped.stdout.splitlines() if ln.startswith("posenc: ")]
    assert {"learned", "none", "sinusoidal"} <= set(posenc_line[8:].split(", "))


def test_experiment_preset_composes():
    result = cli("experiment=sentiment_quick", "--cfg", "job")
    assert result.returncode == 0, result.stderr
    assert "d_model: 64" in result.stdout and "max_epochs: 8" in result.stdout
    # the preset's values win over config.yaml's own (seed, optim), the command line over both
    assert "seed: 1" in result.stdout and "warmup_steps: 20" in result.stdout
    again = cli("experiment=sentiment_quick", "seed=7", "--cfg", "job")
    assert "seed: 7" in again.stdout


PRESETS = sorted(
    p.stem for p in (Path(__file__).resolve().parents[1] / "conf" / "experiment").glob("*.yaml")
)


@pytest.mark.parametrize("preset", PRESETS)
def test_every_experiment_preset_selects_valid_plugin_parameters(preset, tmp_path):
    """A typo in a preset (a parameter the plugin does not take) fails here, not in a sweep."""
    from attnbench.builders import selected

    cfg = compose([f"experiment={preset}"], tmp_path)
    plugins = selected(cfg)
    assert set(plugins) == {"task", "model", "attention", "posenc"}


def test_failed_run_leaves_earlier_results_alone(tmp_path):
    first = run(compose([*SMALL, "trainer.max_epochs=1", "logger=none"], tmp_path))
    before = (tmp_path / "summary.json").read_text()
    with pytest.raises(
        Exception, match="posenc.max_len=4 is shorter than this task.s longest sequence"
    ):
        run(
            compose(
                [
                    *SMALL,
                    "trainer.max_epochs=1",
                    "logger=none",
                    "posenc=learned",
                    "posenc.max_len=4",
                ],
                tmp_path,
            )
        )
    assert (tmp_path / "summary.json").read_text() == before
    assert json.loads(before)["metrics"] == pytest.approx(first["metrics"])


def _combinations() -> list[tuple[str, str]]:
    from attnbench import available

    return [(a, p) for a in available("attention") for p in available("posenc")]


# Stated independently of the plugins' flags: graph attention needs edges the default task
# (sentiment) does not give; linear attention's normaliser takes no relative posenc.
POSENCS = ("none", "sinusoidal", "learned", "rope", "alibi", "relative")
REFUSED = {
    **{("graph", p): "needs graph edges" for p in POSENCS},
    **{("linear", p): "supports_relative_posenc" for p in ("rope", "alibi", "relative")},
}


@pytest.mark.parametrize(("attention", "posenc"), _combinations())
def test_every_attention_posenc_combination(attention, posenc, tmp_path):
    """Each built-in attention × posenc on the default task: it runs, or it is refused before
    training with a one-line reason."""
    from attnbench import registry

    overrides = [
        f"attention={attention}",
        f"posenc={posenc}",
        "model.d_model=16",
        "model.heads=2",
        "model.layers=1",
    ]
    if (attention, posenc) in REFUSED:
        with pytest.raises(registry.ConfigError, match=REFUSED[attention, posenc]) as err:
            fast_dev_run(overrides, tmp_path)
        assert "\n" not in str(err.value)
        assert not (tmp_path / "checkpoints").exists()  # refused before training
        return
    summary = fast_dev_run(overrides, tmp_path)
    assert summary["plugins"]["attention"]["name"] == attention
    assert summary["plugins"]["posenc"]["name"] == posenc


class SeenCheckpoints(Callback):
    seen: list = []

    def on_train_epoch_start(self, trainer, pl_module):
        path = trainer.checkpoint_callback.dirpath
        SeenCheckpoints.seen.append(
            sorted(p.name for p in Path(path).glob("*.ckpt")) if Path(path).is_dir() else []
        )


def test_last_checkpoint_is_written_after_every_epoch(tmp_path):
    SeenCheckpoints.seen = []
    run(
        compose(
            [
                *SMALL,
                "trainer.max_epochs=3",
                "logger=none",
                f"+callbacks.seen._target_={__name__}.SeenCheckpoints",
            ],
            tmp_path,
        )
    )
    assert SeenCheckpoints.seen == [[], ["last.ckpt"], ["last.ckpt"]]


def test_piped_output_prints_a_plain_line_per_epoch(tmp_path):
    result = cli(*SMALL, "trainer.max_epochs=2", f"hydra.run.dir={tmp_path}")  # stdout piped
    assert result.returncode == 0, result.stderr[-2000:]
    lines = [ln for ln in result.stdout.splitlines() if ln.startswith("epoch ")]
    assert [ln.split()[1] for ln in lines] == ["1/2", "2/2"]
    for line in lines:
        assert "step " in line and "train/loss " in line and "val/acc " in line
        assert "samples/s" in line and "elapsed" in line
    assert "━" not in result.stdout  # no progress bar redraws in a log


def test_best_checkpoint_preset_tests_the_best_validation_epoch(tmp_path):
    import csv

    summary = run(
        compose([*SMALL, "trainer.max_epochs=4", "callbacks=best_checkpoint", "seed=2"], tmp_path)
    )
    with open(tmp_path / "csv" / "metrics.csv", newline="") as file:
        val = [(float(r["val/acc"]), int(r["epoch"])) for r in csv.DictReader(file) if r["val/acc"]]
    best_epoch = max(val, key=lambda acc_epoch: (acc_epoch[0], -acc_epoch[1]))[1]  # first best
    assert summary["tested"] == "best" and summary["best_epoch"] == best_epoch
    assert (tmp_path / "checkpoints" / "best.ckpt").is_file()
    assert len(summary["epoch_seconds"]) == 4  # the whole run, not the best checkpoint's


def test_early_stopping_preset_stops_when_the_metric_stalls(tmp_path):
    overrides = [*SMALL, "trainer.max_epochs=8", "optim.lr=1e-12", "optim.scheduler=none"]
    summary = run(
        compose(
            [*overrides, "callbacks=early_stopping", "callbacks.early_stopping.patience=1"],
            tmp_path,
        )  # fmt: skip
    )
    assert len(summary["epoch_seconds"]) == 2  # epoch 2 did not improve on epoch 1
    assert summary["tested"] == "last"
