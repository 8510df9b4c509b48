"""hparams_search=... (#16, item 2): an Optuna study in SQLite under the sweep dir, optimising
optimized_metric in the direction the metric implies, resumable, its best trial written to
best.yaml as a config that reruns it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from conftest import cli
from test_launchers import FAST as LAUNCHER_FAST

from attnbench import registry
from attnbench.search import metric_direction, study_direction

optuna = pytest.importorskip("optuna")

# the launcher tests' small settings; model.layers is left to the search
FAST = [
    "experiment=sentiment_quick",
    *(o for o in LAUNCHER_FAST if not o.startswith("model.layers")),
    "logger=none",
]


@pytest.mark.parametrize(
    "metric, direction",
    [
        ("val/acc", "maximize"),
        ("test/acc", "maximize"),
        ("val/f1", "maximize"),
        ("val/bleu", "maximize"),
        ("val/acc_best", "maximize"),
        ("val/loss", "minimize"),
        ("train/loss", "minimize"),
        ("val/mse", "minimize"),
        ("val/nll_loss", "minimize"),
    ],
)
def test_the_direction_follows_the_metric(metric, direction):
    assert metric_direction(metric) == direction


def test_the_task_declaration_wins_and_unknown_names_are_refused():
    assert metric_direction("val/score", "val/score", "min") == "minimize"
    with pytest.raises(registry.ConfigError, match="hydra.sweeper.direction"):
        metric_direction("val/score")
    assert study_direction("val/score", "maximize") == "maximize"  # the user's word
    with pytest.raises(registry.ConfigError, match="contradicts"):
        study_direction("val/loss", "maximize")
    with pytest.raises(registry.ConfigError, match="allowed"):
        study_direction("val/acc", "up")


def _search(sweep_dir: Path, *overrides: str):
    return cli(
        "hparams_search=window", *FAST, f"hydra.sweep.dir={sweep_dir}", *overrides, timeout=900
    )


def _study(sweep_dir: Path):
    return optuna.load_study(study_name="attnbench", storage=f"sqlite:///{sweep_dir}/optuna.db")


def _job_dir(sweep_dir: Path, number: int) -> Path:
    return sweep_dir / f"trial_{number}"


def test_search_writes_the_study_and_a_best_yaml_that_reruns_the_best(tmp_path):
    result = _search(tmp_path, "hydra.sweeper.n_trials=2")
    assert result.returncode == 0, result.stderr[-3000:]
    study = _study(tmp_path)
    assert study.direction == optuna.study.StudyDirection.MAXIMIZE  # val/acc
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE"]
    for trial in study.trials:  # the value told is the job's own val/acc
        summary = json.loads((_job_dir(tmp_path, trial.number) / "summary.json").read_text())
        assert trial.value == summary["metrics"]["val/acc"]
    best = study.best_trial
    assert best.value == max(t.value for t in study.trials)
    assert f"best val/acc={best.value:.4f}" in result.stdout

    written = yaml.safe_load((tmp_path / "best.yaml").read_text())
    assert written["attention"]["window"] == best.params["attention.window"]
    assert written["optim"]["lr"] == best.params["optim.lr"]
    # the rerun composes exactly the best trial's config (minus the search preset)
    rerun = cli("--config-dir", str(tmp_path), "--config-name", "best", "--cfg", "job")
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    trial_config = (_job_dir(tmp_path, best.number) / ".hydra" / "config.yaml").read_text()
    assert yaml.safe_load(rerun.stdout) == yaml.safe_load(trial_config)


def test_a_second_run_continues_the_study_and_reruns_a_crashed_trial(tmp_path):
    assert _search(tmp_path, "hydra.sweeper.n_trials=1").returncode == 0
    study = _study(tmp_path)
    [first] = study.trials
    # a crash in the middle of trial 1: asked, running, never told
    crashed = study.ask(first.distributions)
    crashed_params = dict(crashed.params)

    result = _search(tmp_path, "hydra.sweeper.n_trials=3")
    assert result.returncode == 0, result.stderr[-3000:]
    trials = _study(tmp_path).trials
    assert [t.state.name for t in trials] == ["COMPLETE"] * 3  # grew from 1, not restarted
    assert (trials[0].params, trials[0].value) == (first.params, first.value)
    assert trials[1].params == crashed_params  # rerun as itself, in its own job directory
    assert (_job_dir(tmp_path, 1) / "summary.json").is_file()
    assert (_job_dir(tmp_path, 2) / "summary.json").is_file()


def test_a_loss_is_minimised_and_another_search_in_the_same_dir_is_refused(tmp_path):
    result = _search(tmp_path, "hydra.sweeper.n_trials=1", "optimized_metric=val/loss")
    assert result.returncode == 0, result.stderr[-3000:]
    study = _study(tmp_path)
    assert study.direction == optuna.study.StudyDirection.MINIMIZE
    summary = json.loads((_job_dir(tmp_path, 0) / "summary.json").read_text())
    assert study.trials[0].value == summary["metrics"]["val/loss"]
    best = yaml.safe_load((tmp_path / "best.yaml").read_text())
    assert best["optimized_metric"] == "val/loss"

    other = _search(tmp_path, "hydra.sweeper.n_trials=2", "optimized_metric=val/loss", "seed=3")
    assert other.returncode == 2
    [line] = other.stderr.strip().splitlines()
    assert "holds a study with other settings" in line and "fixed" in line
    assert len(_study(tmp_path).trials) == 1


def test_a_metric_fixed_in_the_search_params_sets_the_direction(tmp_path):
    """optimized_metric given in hydra.sweeper.params (as a preset would) is what the trials
    return: the study minimises it, though the composed config's own metric is val/acc."""
    result = _search(
        tmp_path, "hydra.sweeper.n_trials=1", "+hydra.sweeper.params.optimized_metric=val/loss"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert _study(tmp_path).direction == optuna.study.StudyDirection.MINIMIZE


def test_sweeping_the_metric_is_refused_in_one_line(tmp_path):
    result = _search(tmp_path, "hydra.sweeper.n_trials=1", "optimized_metric=val/acc,val/loss")
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert "cannot sweep optimized_metric" in line
