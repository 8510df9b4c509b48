"""``attnbench report``: summary.json files -> mean ± std per group."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest
from conftest import cli, fast_dev_run

from attnbench.report import main as report_main


def write_summary(path: Path, model: str, seed: int, acc: float, **extra) -> None:
    path.mkdir(parents=True)
    summary = {
        "metrics": {"test/acc": acc, "val/acc": acc - 0.01},
        "seed": seed,
        "params": 1000,
        "wall_seconds": 10.0 + seed,
        "plugins": {"task": {"name": "pos", "dataset": "ud_ewt"}, "model": {"name": model}},
        **extra,
    }
    (path / "summary.json").write_text(json.dumps(summary))


def test_groups_pool_seeds_and_give_mean_and_sample_std(tmp_path, capsys):
    accs = {"rnn": [0.90, 0.92, 0.97], "cnn": [0.80, 0.81]}
    for model, values in accs.items():
        for seed, acc in enumerate(values):
            write_summary(tmp_path / "sweep" / f"{model}_{seed}", model, seed, acc)
    out_json = tmp_path / "rows.json"
    report_main([str(tmp_path / "sweep"), "--json", str(out_json)])
    rows = {r["model.name"]: r for r in json.loads(out_json.read_text())}
    assert rows["rnn"]["n"] == 3 and rows["cnn"]["n"] == 2
    assert rows["rnn"]["mean"] == pytest.approx(statistics.fmean(accs["rnn"]))
    assert rows["rnn"]["std"] == pytest.approx(statistics.stdev(accs["rnn"]))
    assert rows["rnn"]["seeds"] == [0, 1, 2]
    table = capsys.readouterr().out
    assert "| pos | ud_ewt | rnn | 0.930 ± 0.036 | 3 |" in table


def test_pivot_puts_models_in_columns_and_percent_scales(tmp_path, capsys):
    for seed, acc in enumerate([0.5, 0.7]):
        write_summary(tmp_path / f"t{seed}", "transformer", seed, acc)
    write_summary(tmp_path / "m0", "mlp", 0, 0.25)
    report_main([str(tmp_path), "--pivot", "model.name", "--percent"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "| task.name | task.dataset | mlp | transformer |"
    assert lines[2].startswith("| pos | ud_ewt | 25.0 (n=1, 10 s) | 60.0 ± 14.1 (n=2, 10 s) |")


def test_runs_without_the_metric_are_skipped_with_a_reason(tmp_path, capsys):
    write_summary(tmp_path / "a", "rnn", 0, 0.9)
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "summary.json").write_text("{not json")
    report_main([str(tmp_path), "--metric", "val/acc"])
    captured = capsys.readouterr()
    assert "skipping" in captured.err and str(tmp_path / "b" / "summary.json") in captured.err
    assert "| rnn | 0.890 | 1 |" in captured.out


def test_bad_input_is_one_line_and_exit_2(tmp_path):
    write_summary(tmp_path / "a", "rnn", 0, 0.9)
    for args, expected in (
        (["nowhere"], "no such file or directory"),
        (
            [str(tmp_path), "--metric", "test/bleu"],
            "'test/bleu'; did you mean 'test/acc'? available: test/acc, val/acc",
        ),
        (
            [str(tmp_path), "--group", "model.nme"],
            "no run has the --group field 'model.nme'; did you mean 'model.name'",
        ),
        ([str(tmp_path), "--pivot", "seed"], "not one of the --group"),
    ):
        result = cli("report", *args, cwd=tmp_path)
        assert result.returncode == 2, result.stderr
        error = [line for line in result.stderr.splitlines() if "error" in line]
        assert len(error) == 1 and expected in error[0]


def test_reports_real_runs(tmp_path, capsys):
    for seed in (1, 2):
        fast_dev_run(["task=sentiment", f"seed={seed}"], tmp_path / "runs" / str(seed))
    report_main([str(tmp_path / "runs"), "--metric", "test/acc"])
    out = capsys.readouterr().out
    assert "| sentiment | synthetic | transformer |" in out and "| 2 |" in out


def test_pooling_other_settings_or_repeated_seeds_is_reported(tmp_path, capsys):
    write_summary(tmp_path / "a", "rnn", 1, 0.9)
    write_summary(tmp_path / "b", "rnn", 1, 0.8)  # the same seed again (an older sweep)
    summary = json.loads((tmp_path / "b" / "summary.json").read_text())
    summary["plugins"]["model"]["layers"] = 4
    (tmp_path / "b" / "summary.json").write_text(json.dumps(summary))
    out_json = tmp_path / "rows.json"
    report_main([str(tmp_path), "--json", str(out_json)])
    err = capsys.readouterr().err
    assert "pooled runs differ in model.layers" in err
    assert "seed repeated among [1, 1]" in err
    write_summary(tmp_path / "single" / "c", "cnn", 1, 0.5)
    report_main([str(tmp_path / "single"), "--json", str(out_json)])
    assert json.loads(out_json.read_text())[0]["std"] is None  # one run: no std, valid JSON
