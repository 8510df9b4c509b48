"""Nothing lost, nothing run from a checkpoint, failures isolated: resume keeps the log
history, divergence stops a run, a failing sweep job never stops the others."""

from __future__ import annotations

import csv
import http.server
import json
import pickle
import re
import threading
from pathlib import Path

import pytest
from conftest import cli, compose
from pytorch_lightning.callbacks import Callback

from attnbench.registry import ConfigError
from attnbench.train import run

SMALL = [
    "model.d_model=16",
    "model.heads=2",
    "model.layers=1",
    "task.batch_size=32",
    "trainer.accelerator=cpu",
    "trainer.limit_train_batches=5",
    "trainer.limit_val_batches=2",
    "trainer.limit_test_batches=2",
    "trainer.log_every_n_steps=1",
    "optim.scheduler=none",  # the resumed run may not see the same total step count
    "seed=5",
]


class CrashInSecondEpoch(Callback):
    """A crash after epoch 0's checkpoint, with some of epoch 1 already logged."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.current_epoch == 1 and batch_idx == 2:
            raise RuntimeError("simulated crash")


def _rows(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "csv" / "metrics.csv", newline="") as file:
        return list(csv.DictReader(file))


def test_resumed_run_keeps_the_whole_csv_history(tmp_path):
    straight = run(compose([*SMALL, "trainer.max_epochs=3"], tmp_path / "straight"))
    crash = f"+callbacks.crash._target_={__name__}.CrashInSecondEpoch"
    part = tmp_path / "part"
    with pytest.raises(RuntimeError, match="simulated crash"):
        run(compose([*SMALL, "trainer.max_epochs=3", crash], part))
    crashed_rows = _rows(part)
    assert any(r["epoch"] == "1" for r in crashed_rows)  # epoch 1 was partly logged
    resumed = run(
        compose([*SMALL, "trainer.max_epochs=3", f"ckpt_path={part}/checkpoints/last.ckpt"], part)
    )
    assert _rows(part) == _rows(tmp_path / "straight")  # every row once, none lost
    assert resumed["metrics"] == pytest.approx(straight["metrics"])
    assert len(resumed["epoch_seconds"]) == 3  # the summary covers the whole run
    assert resumed["earlier_wall_seconds"] > 0  # and the crashed call's time to its checkpoint


def test_resume_into_a_new_directory_carries_the_history(tmp_path):
    first = tmp_path / "first"
    run(compose([*SMALL, "trainer.max_epochs=1"], first))
    second = tmp_path / "second"
    continued = run(
        compose(
            [*SMALL, "trainer.max_epochs=2", f"ckpt_path={first}/checkpoints/last.ckpt"], second
        )
    )
    assert continued["earlier_wall_seconds"] == 0  # the finished first run's summary has it
    straight = tmp_path / "straight"
    run(compose([*SMALL, "trainer.max_epochs=2"], straight))
    assert _rows(second) == _rows(straight)
    assert len(_rows(first)) < len(_rows(second))  # the first run's log is left as it was


def test_divergence_stops_the_run_with_status_and_strict_json(tmp_path):
    summary = run(compose([*SMALL, "trainer.max_epochs=2", "optim.lr=1e6"], tmp_path))
    assert summary["status"] == "diverged"
    assert "diverged at epoch 0, step" in summary["reason"]
    text = (tmp_path / "summary.json").read_text()
    assert "NaN" not in text and "Infinity" not in text
    json.loads(text, parse_constant=lambda c: pytest.fail(f"non-strict JSON constant {c}"))
    assert not any(r["epoch"] == "1" for r in _rows(tmp_path))  # it stopped in epoch 0


def test_diverged_run_exits_non_zero_with_one_line(tmp_path):
    result = cli("optim.lr=1e6", "trainer.max_epochs=1", *SMALL[:3], f"hydra.run.dir={tmp_path}")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    [line] = [ln for ln in result.stderr.splitlines() if "diverged" in ln]
    assert "step" in line and "loss" in line


def test_a_failing_job_does_not_stop_the_sweep(tmp_path):
    result = cli(
        "-m",
        "attention=dot,graph,linear",
        "trainer.fast_dev_run=true",
        *SMALL[:3],
        f"hydra.sweep.dir={tmp_path}",
    )
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    statuses = {
        p.parent.name.split("_")[1].split(",")[0]: json.loads(p.read_text())["status"]
        for p in tmp_path.glob("*/summary.json")
    }
    assert statuses == {
        "attention=dot": "ok",
        "attention=graph": "failed",
        "attention=linear": "ok",
    }
    [line] = [ln for ln in result.stderr.splitlines() if ln.startswith("attnbench: failed:")]
    assert "attention=graph" in line and "needs graph edges" in line


# ----------------------------------------------------------------------------- checkpoints


class RunsCode:
    """Unpickling this calls Path.touch: what a crafted checkpoint would do."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _crafted(tmp_path: Path) -> tuple[Path, Path]:
    marker = tmp_path / "code-ran"
    ckpt = tmp_path / "evil.ckpt"
    ckpt.write_bytes(pickle.dumps({"state_dict": {}, "payload": RunsCode(marker)}))
    return ckpt, marker


def test_crafted_local_checkpoint_runs_no_code(tmp_path):
    ckpt, marker = _crafted(tmp_path)
    result = cli(f"ckpt_path={ckpt}", *SMALL[:3], f"hydra.run.dir={tmp_path / 'run'}")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"ckpt_path={ckpt}" in result.stderr and "not a loadable checkpoint" in result.stderr
    assert not marker.exists()


def test_crafted_checkpoint_over_http_runs_no_code(tmp_path):
    ckpt, marker = _crafted(tmp_path)

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(tmp_path), **kwargs)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/{ckpt.name}"
        result = cli(f"ckpt_path={url}", *SMALL[:3], f"hydra.run.dir={tmp_path / 'run'}")
    finally:
        server.shutdown()
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "only local checkpoint files" in result.stderr
    assert not marker.exists()


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (None, "no such file"),
        (b"", "the file is empty"),
        (b"\x00\x01garbage\xff" * 50, "not a loadable checkpoint"),
    ],
    ids=["missing", "empty", "random bytes"],
)
def test_bad_checkpoint_is_one_line_before_data_loads(content, expected, tmp_path):
    from attnbench.checkpoints import checked_checkpoint

    ckpt = tmp_path / "last.ckpt"
    if content is not None:
        ckpt.write_bytes(content)
    with pytest.raises(ConfigError, match=expected) as err:
        checked_checkpoint(str(ckpt))
    assert "\n" not in str(err.value) and str(ckpt) in str(err.value)


def test_truncated_checkpoint_is_refused(tmp_path):
    from attnbench.checkpoints import checked_checkpoint

    run(compose([*SMALL, "trainer.max_epochs=1", "logger=none"], tmp_path / "run"))
    good = (tmp_path / "run" / "checkpoints" / "last.ckpt").read_bytes()
    ckpt = tmp_path / "truncated.ckpt"
    ckpt.write_bytes(good[: len(good) // 2])
    with pytest.raises(ConfigError, match="not a loadable checkpoint"):
        checked_checkpoint(str(ckpt))
    assert checked_checkpoint(str(tmp_path / "run" / "checkpoints" / "last.ckpt"))


def test_resumed_run_continues_the_same_wandb_run(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_MODE", "offline")
    run_dir = tmp_path / "run"
    run(compose([*SMALL, "trainer.max_epochs=1", "logger=wandb"], run_dir))
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    run(compose([*SMALL, "trainer.max_epochs=2", "logger=wandb", f"ckpt_path={ckpt}"], run_dir))
    other = tmp_path / "other"
    run(compose([*SMALL, "trainer.max_epochs=1", "logger=wandb"], other))

    def run_ids(folder):  # offline-run-<date>_<time>-<id>[-<n> when in the same second]
        runs = sorted((folder / "wandb").glob("offline-run-*"))
        return len(runs), {re.match(r"offline-run-\d+_\d+-(\w+)", p.name)[1] for p in runs}

    count, ids = run_ids(run_dir)
    assert count == 2 and len(ids) == 1
    _, [other_id] = run_ids(other)
    assert other_id not in ids  # another directory is another wandb run


def test_resuming_with_another_model_is_one_line(tmp_path):
    first = tmp_path / "first"
    run(compose([*SMALL, "trainer.max_epochs=1", "logger=none"], first))
    other = [*SMALL, "model.d_model=32", "trainer.max_epochs=2", "logger=none"]
    with pytest.raises(
        ConfigError, match=r"does not fit this model: .* is \(54, 16\) there and \(54, 32\) here"
    ) as err:
        run(compose([*other, f"ckpt_path={first}/checkpoints/last.ckpt"], tmp_path / "again"))
    assert "\n" not in str(err.value)


def test_a_checkpoint_from_before_the_network_container_resumes(tmp_path):
    import torch

    first = tmp_path / "first"
    run(compose([*SMALL, "trainer.max_epochs=1", "logger=none"], first))
    checkpoint = torch.load(first / "checkpoints" / "last.ckpt", weights_only=True)
    checkpoint["state_dict"] = {  # the layout before LitModel.net: embedder.…, backbone.…
        key.removeprefix("net."): value for key, value in checkpoint["state_dict"].items()
    }
    old = tmp_path / "old.ckpt"
    torch.save(checkpoint, old)
    resumed = run(
        compose([*SMALL, "trainer.max_epochs=2", "logger=none", f"ckpt_path={old}"], tmp_path / "r")
    )
    assert resumed["status"] == "ok" and len(resumed["epoch_seconds"]) == 2
