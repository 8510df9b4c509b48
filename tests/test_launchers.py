"""Launchers as presets (#16): joblib and submitit run a sweep to the end, each job with its
share of the cores; a missing extra is one line naming it; loggers under -m."""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import pytest
from conftest import REPO, cli
from hydra.experimental.callback import Callback

from attnbench import registry
from attnbench.launch import MAX_NAME_BYTES, apply_threads, job_dirname, threads_for

FAST = [
    "model.d_model=16",
    "model.heads=2",
    "model.layers=1",
    "task.batch_size=32",
    "trainer.accelerator=cpu",
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=3",
    "trainer.limit_val_batches=2",
    "trainer.limit_test_batches=2",
]
# The probe below is imported by name in the jobs' processes (loky workers, submitit).
PROBE = [f"+hydra.callbacks.probe._target_={__name__}.ThreadProbe"]
PROBE_ENV = {"PYTHONPATH": os.pathsep.join([str(REPO / "tests"), os.environ.get("PYTHONPATH", "")])}


class ThreadProbe(Callback):
    """Records, in each job's directory, the torch threads the job ran with."""

    def on_job_end(self, config, job_return, **kwargs) -> None:
        import torch

        out = Path(config.hydra.runtime.output_dir)
        (out / "threads.txt").write_text(str(torch.get_num_threads()))


def _cores() -> int:
    return len(os.sched_getaffinity(0))


def _finished(sweep_dir: Path) -> dict[str, str]:
    return {
        p.parent.name: json.loads(p.read_text())["status"] for p in sweep_dir.glob("*/summary.json")
    }


def _probed_sweep(sweep_dir: Path, *launcher: str):
    """A 2-job sweep under a launcher, each job recording its torch threads."""
    return cli(
        "-m", *launcher, "seed=1,2", "logger=none", *FAST, *PROBE,
        f"hydra.sweep.dir={sweep_dir}", env=PROBE_ENV,
    )  # fmt: skip


def test_joblib_runs_the_sweep_with_each_job_on_its_share_of_the_cores(tmp_path):
    result = _probed_sweep(tmp_path, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Joblib.Parallel(n_jobs=2" in result.stdout + result.stderr  # not the basic launcher
    assert list(_finished(tmp_path).values()) == ["ok", "ok"]
    threads = [int(p.read_text()) for p in tmp_path.glob("*/threads.txt")]
    assert threads == [max(1, _cores() // 2)] * 2


def test_submitit_local_runs_the_sweep_with_its_cpus_per_task(tmp_path):
    result = _probed_sweep(
        tmp_path,
        "hydra/launcher=submitit_local",
        "hydra.launcher.cpus_per_task=1",
        "hydra.launcher.timeout_min=10",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / ".submitit").is_dir()  # the jobs went through submitit
    assert list(_finished(tmp_path).values()) == ["ok", "ok"]
    assert [int(p.read_text()) for p in tmp_path.glob("*/threads.txt")] == [1, 1]


@pytest.mark.parametrize(
    "choice, module, extra",
    [
        ("hydra/launcher=joblib", "hydra_plugins.hydra_joblib_launcher", "launchers"),
        ("hydra/launcher=submitit_slurm", "hydra_plugins.hydra_submitit_launcher", "launchers"),
        ("hydra/launcher=slurm", "hydra_plugins.hydra_submitit_launcher", "launchers"),
        ("hparams_search=transformer", "optuna", "optuna"),
        ("hydra/sweeper=optuna", "optuna", "optuna"),
    ],
)
def test_a_missing_extra_is_one_line_naming_it(choice, module, extra, monkeypatch, capsys):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == module else real(name, *a)
    )
    from attnbench.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["-m", choice, "seed=1,2"])
    assert exit_.value.code == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert choice in line and f"pip install 'attnbench[{extra}]'" in line


def test_installed_extras_pass_the_check():
    from attnbench.extras import check_overrides

    check_overrides(["hydra/launcher=joblib", "hparams_search=window", "seed=1"])


@pytest.mark.parametrize(
    "launcher, cores, threads",
    [
        ({"_target_": "hydra_plugins.hydra_joblib_launcher.JoblibLauncher", "n_jobs": 2}, 8, 4),
        ({"_target_": "hydra_plugins.hydra_joblib_launcher.JoblibLauncher", "n_jobs": 2}, 2, 1),
        ({"_target_": "hydra_plugins.hydra_joblib_launcher.JoblibLauncher", "n_jobs": -1}, 4, 1),
        ({"_target_": "hydra_plugins.hydra_joblib_launcher.JoblibLauncher", "n_jobs": -2}, 4, 1),
        ({"_target_": "hydra_plugins.hydra_joblib_launcher.JoblibLauncher", "n_jobs": 3}, 2, 1),
        ({"_target_": "hydra_plugins.x.SlurmLauncher", "cpus_per_task": 6}, 64, 6),
        ({"_target_": "hydra_plugins.x.LocalLauncher", "cpus_per_task": None}, 4, None),
        ({"_target_": "hydra._internal.core_plugins.basic_launcher.BasicLauncher"}, 2, None),
    ],
)
def test_threads_per_job_follow_the_launcher(launcher, cores, threads):
    assert threads_for(launcher, cores) == threads


@pytest.mark.parametrize("bad", [0, -1, "2", True, 1.5])
def test_bad_threads_are_refused(bad):
    with pytest.raises(registry.ConfigError, match=r"^threads="):
        apply_threads({"threads": bad})


# ------------------------------------------------------------------------- loggers under -m


def _wandb_runs(run_dir: Path) -> list[tuple[str, str, str]]:
    """(group, name, id) of the offline wandb runs in a run directory, read from the .wandb
    file (leveldb log blocks of protobuf records), as `wandb sync` would upload them."""
    from wandb.proto import wandb_internal_pb2 as pb

    found = []
    for path in run_dir.glob("wandb/offline-run-*/run-*.wandb"):
        data, pos, chunk = path.read_bytes(), 7, b""  # 7: the W&B file header
        while pos + 7 <= len(data):
            left = 32768 - pos % 32768
            _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
            if left < 7 or (length == 0 and kind == 0):  # block padding
                pos += left
                continue
            chunk += data[pos + 7 : pos + 7 + length]
            pos += 7 + length
            if kind in (1, 4):  # full record, or the last piece of one
                record = pb.Record()
                record.ParseFromString(chunk)
                chunk = b""
                if record.WhichOneof("record_type") == "run":
                    found.append((record.run.run_group, record.run.display_name, record.run.run_id))
    return found


def test_loggers_under_a_sweep_one_wandb_run_per_job_and_one_tensorboard_logdir(tmp_path):
    from tensorboard.backend.event_processing.event_multiplexer import EventMultiplexer

    sweep_dir = tmp_path / "2026-01-02" / "10-11-12"
    result = cli(
        "-m",
        "logger=many",
        "model.layers=1,2",
        *[o for o in FAST if not o.startswith("model.layers")],
        f"hydra.sweep.dir={sweep_dir}",
        env={"WANDB_MODE": "offline"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = sorted(p for p in sweep_dir.iterdir() if (p / "summary.json").is_file())
    assert len(jobs) == 2
    runs = [_wandb_runs(job) for job in jobs]
    assert [len(r) for r in runs] == [1, 1]
    (group0, name0, id0), (group1, name1, id1) = runs[0][0], runs[1][0]
    assert group0 == group1 == "2026-01-02/10-11-12"  # the sweep, as a wandb group
    assert id0 != id1
    # named by the job's overrides: the job directory is <number>_<overrides>
    assert [name0, name1] == [job.name.split("_", 1)[1] for job in jobs]
    assert "model.layers=1" in name0 and "model.layers=2" in name1

    tensorboard = EventMultiplexer().AddRunsFromDirectory(str(sweep_dir))
    tensorboard.Reload()
    shown = tensorboard.Runs()
    assert sorted(shown) == [f"{job.name}/tensorboard" for job in jobs]
    for run in shown:
        assert "val/acc" in tensorboard.GetAccumulator(run).Tags()["scalars"]


def test_job_folder_names_stay_one_folder_and_within_the_file_system_limit():
    assert job_dirname(3, "a=1,b=x") == "3_a=1,b=x"  # short names unchanged
    assert job_dirname(0, "data_dir=/data/x") == "0_data_dir=_data_x"  # no nested folders
    fits = "x=" + "a" * (MAX_NAME_BYTES - 4)
    assert job_dirname(12, fits[:-1]) == f"12_{fits[:-1]}"  # 255 bytes: as Hydra names it
    long = ",".join(f"model.option_{i}=é{i}" for i in range(40))
    cut = job_dirname(7, long)
    assert len(cut.encode()) <= MAX_NAME_BYTES and f"7_{long}".startswith(cut[:200])
    assert cut != job_dirname(7, long + "1")  # the hash of the whole tells them apart


def test_a_sweep_with_long_overrides_runs_in_one_folder_per_job(tmp_path):
    data = tmp_path / "data" / "built-in"
    overrides = [*FAST, f"data_dir={data}", "optim.lr=0.001", "optim.weight_decay=0.02"]
    assert len(",".join(overrides).encode()) > 255  # Hydra's verbatim name would not fit
    sweep = tmp_path / "sweep"
    result = cli("-m", "seed=1,2", "logger=none", *overrides, f"hydra.sweep.dir={sweep}")
    assert result.returncode == 0, result.stderr[-3000:]
    names = sorted(p.parent.name for p in sweep.glob("*/summary.json"))
    assert [n[:2] for n in names] == ["0_", "1_"]
    assert all(len(n.encode()) <= 255 for n in names)
