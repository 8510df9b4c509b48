"""``callbacks=attention_maps``: a fixed example's attention maps every N epochs, as files in
the run directory and as images in TensorBoard and wandb, through the real harness."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from conftest import compose
from matplotlib.image import imread
from omegaconf import OmegaConf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from attnbench.registry import ConfigError
from attnbench.train import run

BATCHES = 2  # training batches per epoch: the global step after epoch e is BATCHES * (e + 1)
SMALL = [
    "model.d_model=16",
    "model.heads=2",
    "model.layers=2",
    "trainer.accelerator=cpu",
    f"trainer.limit_train_batches={BATCHES}",
    "trainer.limit_val_batches=1",
    "trainer.limit_test_batches=1",
]
MAPS = ["callbacks=attention_maps"]


def train(out: Path, *overrides: str) -> dict:
    return run(compose(["task=pos", *SMALL, *overrides], out))


def drawn(out: Path) -> list[str]:
    folder = out / "maps"
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def tensorboard_images(folder: Path) -> dict[str, list]:
    """tag -> the image summaries of every event file under folder."""
    found: dict[str, list] = {}
    for events in sorted(folder.glob("events.out.tfevents.*")):
        acc = EventAccumulator(str(events), size_guidance={"images": 0})
        acc.Reload()
        for tag in acc.Tags()["images"]:
            found.setdefault(tag, []).extend(acc.Images(tag))
    return found


def test_every_nth_epoch_goes_to_the_run_directory_and_tensorboard(tmp_path):
    summary = train(
        tmp_path,
        *MAPS,
        "callbacks.attention_maps.every_n_epochs=2",
        "trainer.max_epochs=4",
        "logger=tensorboard",
    )
    assert summary["status"] == "ok"
    assert drawn(tmp_path) == ["epoch_1.png", "epoch_3.png"]  # epochs count from 0
    images = tensorboard_images(tmp_path / "tensorboard")
    assert list(images) == ["attention_maps/val_0"]
    logged = images["attention_maps/val_0"]
    assert [e.step for e in logged] == [BATCHES * 2, BATCHES * 4]
    for event, epoch in zip(logged, (1, 3)):
        height, width, _ = imread(tmp_path / "maps" / f"epoch_{epoch}.png").shape
        assert (event.height, event.width) == (height, width)  # the file's picture
        assert len(event.encoded_image_string) > 5000  # a PNG of heatmaps, not a blank


def test_csv_logger_gets_the_files_only(tmp_path):
    train(tmp_path, *MAPS, "trainer.max_epochs=2", "logger=csv")
    assert drawn(tmp_path) == ["epoch_0.png", "epoch_1.png"]
    assert not (tmp_path / "tensorboard").exists() and not (tmp_path / "wandb").exists()
    assert "attention_maps" not in (tmp_path / "csv" / "metrics.csv").read_text()
    # the token grid of a POS sentence, at 150 dpi: inches of picture, not a thumbnail
    height, width, _ = imread(tmp_path / "maps" / "epoch_1.png").shape
    assert height > 300 and width > 300


def test_wandb_gets_the_maps_as_images(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc: not logged in, offline
    monkeypatch.setenv("NETRC", str(tmp_path / "none"))
    train(tmp_path / "run", *MAPS, "trainer.max_epochs=2", "logger=wandb")
    assert drawn(tmp_path / "run") == ["epoch_0.png", "epoch_1.png"]
    [offline] = (tmp_path / "run" / "wandb").glob("offline-run-*")
    media = sorted((offline / "files" / "media" / "images" / "attention_maps").glob("*.png"))
    assert len(media) == 2  # one image per drawn epoch
    assert sys.modules["wandb"].run is None  # the harness finished the run


def test_model_without_attention_warns_once_and_draws_nothing(tmp_path, capsys):
    summary = run(
        compose(
            ["task=pos", "model=cnn", "model.d_model=16", *SMALL[3:], "trainer.max_epochs=2"]
            + [*MAPS, "logger=csv"],
            tmp_path,
        )
    )
    assert summary["status"] == "ok"
    warnings = [line for line in capsys.readouterr().err.splitlines() if "attention_maps" in line]
    assert len(warnings) == 1 and "'cnn' has no attention module" in warnings[0]
    assert drawn(tmp_path) == [] and not (tmp_path / "maps").exists()


def test_drawing_the_maps_does_not_change_training(tmp_path):
    """Each draw's eval mode is undone (dropout 0.1 stays on), so the metrics are the same
    as without the callback."""
    plain = train(tmp_path / "plain", "trainer.max_epochs=2", "logger=none", "seed=4")
    mapped = train(tmp_path / "mapped", *MAPS, "trainer.max_epochs=2", "logger=none", "seed=4")
    assert drawn(tmp_path / "mapped") == ["epoch_0.png", "epoch_1.png"]
    assert mapped["metrics"] == plain["metrics"]
    assert "val/acc" in plain["metrics"]


def test_a_draw_keeps_the_random_state_and_each_module_mode(tmp_path):
    """Reading the example and drawing it (a data loader's iterator draws a seed) leave
    torch's random state as it was; each module's train/eval mode comes back, mixed ones
    too (a frozen submodule stays in eval)."""
    from attnbench.analysis.callback import AttentionMaps
    from attnbench.analysis.loading import load_run

    run(compose([*SMALL, "task=graph", "attention=graph", "trainer.max_epochs=1"], tmp_path))
    (tmp_path / ".hydra").mkdir()
    (tmp_path / ".hydra" / "config.yaml").write_text(
        OmegaConf.to_yaml(compose([*SMALL, "task=graph", "attention=graph"], tmp_path))
    )
    loaded = load_run(tmp_path)
    module = SimpleNamespace(net=loaded.net, task=loaded.task)
    trainer = SimpleNamespace(
        is_global_zero=True, default_root_dir=str(tmp_path), current_epoch=0, global_step=1
    )
    trainer.loggers = []
    loaded.net.train()
    frozen = loaded.net.embedder.eval()
    modes = [m.training for m in loaded.net.modules()]
    assert any(modes) and not all(modes)
    callback = AttentionMaps(index=3)
    state = torch.get_rng_state()
    callback.on_fit_start(trainer, module)
    callback.on_train_epoch_end(trainer, module)
    assert torch.equal(torch.get_rng_state(), state)
    assert [m.training for m in loaded.net.modules()] == modes and not frozen.training
    assert drawn(tmp_path) == ["epoch_0.png"]


@pytest.mark.parametrize(
    "overrides",
    [
        [
            "task=translation",
            "model=rnn",
            "attention=additive",
            "model.attention_placement=bahdanau",
            "model.layers=1",
        ],
        ["task=image", "task.pooling=cls"],
        ["task=graph", "attention=graph", "callbacks.attention_maps.index=7"],
    ],
    ids=["translation", "image", "graph"],
)
def test_every_kind_of_task_is_drawn(tmp_path, overrides):
    run(compose([*SMALL, *MAPS, "trainer.max_epochs=1", "logger=none", *overrides], tmp_path))
    assert drawn(tmp_path) == ["epoch_0.png"]
    height, width, _ = imread(tmp_path / "maps" / "epoch_0.png").shape
    assert height > 200 and width > 200


@pytest.mark.parametrize(
    "overrides, says",
    [
        (["callbacks.attention_maps.every_n_epochs=0"], "every_n_epochs=0: give an integer >= 1"),
        (["callbacks.attention_maps.split=dev"], "split='dev' is not one of train, val, test"),
        (["callbacks.attention_maps.index=99999"], "index=99999: the val split has only"),
        (
            ["task=graph", "attention=graph", "callbacks.attention_maps.index=99999"],
            "index=99999: the graph has",
        ),
    ],
)
def test_bad_settings_fail_before_training(tmp_path, overrides, says):
    with pytest.raises(ConfigError, match=says):
        run(compose([*SMALL, *MAPS, "trainer.max_epochs=1", "logger=none", *overrides], tmp_path))
    assert not (tmp_path / "checkpoints" / "last.ckpt").exists()  # not one epoch trained
    assert drawn(tmp_path) == []
