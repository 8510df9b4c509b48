"""``attnbench report``: summary.json files -> mean ± std per group."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest
from conftest import cli, fast_dev_run
from matplotlib.container import ErrorbarContainer

from attnbench.analysis.plot import report_figure
from attnbench.report import DEFAULT_GROUP, aggregate, collect
from attnbench.report import main as report_main


def write_summary(path: Path, model: str, seed: int, acc: float, **extra) -> None:
    path.mkdir(parents=True, exist_ok=True)
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
    rows = {r["model.name"]: r for r in json.loads(out_json.read_text())["rows"]}
    assert rows["rnn"]["n"] == 3 and rows["cnn"]["n"] == 2
    assert rows["rnn"]["mean"] == pytest.approx(statistics.fmean(accs["rnn"]))
    assert rows["rnn"]["std"] == pytest.approx(statistics.stdev(accs["rnn"]))
    assert rows["rnn"]["seeds"] == [0, 1, 2]
    assert rows["rnn"]["values"] == accs["rnn"]  # each seed's own value, in seed order
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
    (tmp_path / "empty" / "logs").mkdir(parents=True)
    (tmp_path / "garbled").mkdir()
    (tmp_path / "garbled" / "summary.json").write_text("{not json")
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
        ([str(tmp_path / "empty")], "empty: holds no run (no summary.json, no job directory)"),
        ([str(tmp_path), str(tmp_path / "empty")], "empty: holds no run"),
        ([str(tmp_path / "garbled")], "no readable summary.json under"),
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
    assert json.loads(out_json.read_text())["rows"][0]["std"] is None  # one run: no std, valid JSON


def write_json(path: Path, data: dict) -> None:
    path.mkdir(parents=True, exist_ok=True)
    (path / "summary.json").write_text(json.dumps(data))


def hydra_job(path: Path) -> Path:
    """A sweep's job directory as Hydra leaves it before the run writes its summary."""
    (path / ".hydra").mkdir(parents=True)
    (path / ".hydra" / "config.yaml").write_text("seed: 1\n")
    return path


def failed_sweep(sweep: Path) -> None:
    """Jobs 0, 1 ok (1 an older summary without status), 2 failed, 3 diverged, 10 killed."""
    write_summary(hydra_job(sweep / "0"), "rnn", 0, 0.90, status="ok", reason=None)
    write_summary(hydra_job(sweep / "1"), "rnn", 1, 0.80)
    reason = "model.layers=0: must be >= 1; set model.layers=1 or more"
    write_json(hydra_job(sweep / "2"), {"status": "failed", "reason": reason, "metrics": {}})
    write_summary(
        hydra_job(sweep / "3"),
        "rnn",
        2,
        0.10,
        status="diverged",
        reason="non-finite loss nan at epoch 0, step 3",
    )
    hydra_job(sweep / "10")


def test_failed_diverged_and_missing_jobs_are_listed_under_the_table(tmp_path, capsys):
    failed_sweep(tmp_path / "sweep")
    out_json = tmp_path / "report.json"
    report_main([str(tmp_path / "sweep"), "--json", str(out_json)])
    lines = capsys.readouterr().out.splitlines()
    # the diverged run's 0.10 is kept out of the mean: (0.90 + 0.80) / 2, n = 2
    assert lines[2] == "| pos | ud_ewt | rnn | 0.850 ± 0.071 | 2 | 1,000 | 10 |"
    assert lines[3:] == [
        "",
        "- failed: 2: model.layers=0: must be >= 1; set model.layers=1 or more",
        "- diverged: 3: non-finite loss nan at epoch 0, step 3",
        "- missing: 10: no summary.json: the job was killed or never ran",
    ]
    report = json.loads(out_json.read_text())
    assert [(r["model.name"], r["n"], r["seeds"]) for r in report["rows"]] == [("rnn", 2, [0, 1])]
    assert report["left_out"] == [
        {
            "status": "failed",
            "run": "2",
            "reason": "model.layers=0: must be >= 1; set model.layers=1 or more",
        },
        {"status": "diverged", "run": "3", "reason": "non-finite loss nan at epoch 0, step 3"},
        {
            "status": "missing",
            "run": "10",
            "reason": "no summary.json: the job was killed or never ran",
        },
    ]
    assert report["no_value"] == []


def test_null_or_nan_metric_counts_as_missing_never_crashes(tmp_path, capsys):
    sweep = tmp_path / "sweep"
    for name, loss in (("a", 0.5), ("b", None), ("d", 0.7)):
        write_summary(sweep / name, "rnn", ord(name), 0.9)
        summary = json.loads((sweep / name / "summary.json").read_text())
        summary["metrics"]["val/loss"] = loss
        summary["params"] = summary["wall_seconds"] = None  # written as null too
        (sweep / name / "summary.json").write_text(json.dumps(summary))
    # an older summary: a bare NaN (not strict JSON), no status
    write_summary(sweep / "c", "rnn", 3, 0.9)
    text = (sweep / "c" / "summary.json").read_text()
    (sweep / "c" / "summary.json").write_text(
        text.replace('"metrics": {', '"metrics": {"val/loss": NaN, ')
    )
    write_json(
        sweep / "e",
        {
            "status": "diverged",
            "reason": "non-finite loss inf at epoch 1, step 9",
            "metrics": {"val/loss": None},
            "plugins": {"model": {"name": "rnn"}},
        },
    )
    out_json = tmp_path / "report.json"
    report_main([str(sweep), "--metric", "val/loss", "--json", str(out_json)])
    lines = capsys.readouterr().out.splitlines()
    assert lines[2] == "| pos | ud_ewt | rnn | 0.600 ± 0.141 | 2 | – | – |"
    assert lines[3:] == [
        "",
        "- diverged: e: non-finite loss inf at epoch 1, step 9",
        "- 2 runs had no value for val/loss: b, c",
    ]
    assert json.loads(out_json.read_text())["no_value"] == ["b", "c"]


def test_a_sweep_where_every_job_failed_still_reports_and_exits_0(tmp_path):
    sweep = tmp_path / "sweep"
    write_json(hydra_job(sweep / "0"), {"status": "failed", "reason": "boom", "metrics": {}})
    hydra_job(sweep / "1")
    result = cli("report", str(sweep), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[2:] == [
        "",
        "- failed: 0: boom",
        "- missing: 1: no summary.json: the job was killed or never ran",
    ]
    assert "Traceback" not in result.stderr


def test_several_directories_name_runs_with_the_directory_given(tmp_path, capsys):
    failed_sweep(tmp_path / "one")
    write_summary(tmp_path / "two" / "0", "cnn", 0, 0.5)
    hydra_job(tmp_path / "two" / "1")
    report_main([str(tmp_path / "one"), str(tmp_path / "two")])
    out = capsys.readouterr().out
    assert "| pos | ud_ewt | cnn | 0.500 | 1 |" in out
    assert f"- missing: {tmp_path}/one/10: no summary.json" in out
    assert f"- missing: {tmp_path}/two/1: no summary.json" in out


def write_windowed(path: Path, attention: str, window: int, seed: int, acc: float) -> None:
    write_summary(path, "transformer", seed, acc)
    summary = json.loads((path / "summary.json").read_text())
    summary["plugins"]["attention"] = {"name": attention, "window": window}
    (path / "summary.json").write_text(json.dumps(summary))


def rows_of(directory: Path, group: str) -> tuple[list[dict], list[str]]:
    fields = group.split(",")
    return aggregate(collect([directory]).ok, "test/acc", fields)[0], fields


def test_plot_draws_groups_as_bars_with_std_error_bars(tmp_path, capsys):
    accs = {"cnn": [0.80, 0.81], "rnn": [0.90, 0.92, 0.97]}
    for model, values in accs.items():
        for seed, acc in enumerate(values):
            write_summary(tmp_path / "sweep" / f"{model}_{seed}", model, seed, acc)
    report_main([str(tmp_path / "sweep"), "--plot", str(tmp_path / "figs" / "groups.png")])
    assert (tmp_path / "figs" / "groups.png").read_bytes()[:4] == b"\x89PNG"
    assert "<svg" in (tmp_path / "figs" / "groups.svg").read_text()
    assert "wrote" in capsys.readouterr().err

    (ax,) = report_figure(*rows_of(tmp_path / "sweep", DEFAULT_GROUP), "test/acc").axes
    assert [bar.get_height() for bar in ax.patches] == pytest.approx(
        [statistics.fmean(accs["cnn"]), statistics.fmean(accs["rnn"])]
    )
    (bars,) = [c for c in ax.containers if isinstance(c, ErrorbarContainer)]
    (errors,) = bars.lines[2]  # one vertical segment per bar
    spans = [top[1] - bottom[1] for bottom, top in errors.get_segments()]
    assert spans == pytest.approx([2 * statistics.stdev(v) for v in accs.values()])
    assert [t.get_text() for t in ax.get_xticklabels()] == ["cnn\n(n=2)", "rnn\n(n=3)"]


def test_plot_along_a_numeric_field_draws_lines_with_bands_and_a_log_axis_over_a_decade(
    tmp_path,
):
    for attention in ("local", "truncated"):
        for window in (4, 16, 64):
            for seed, acc in enumerate((0.5, 0.7)):  # std 0.141 in every group
                name = f"{attention}_{window}_{seed}"
                write_windowed(tmp_path / "wide" / name, attention, window, seed, acc)
    group = "attention.name,attention.window"
    (ax,) = report_figure(*rows_of(tmp_path / "wide", group), "test/acc").axes
    lines = ax.get_lines()
    assert [line.get_label() for line in lines] == [
        "attention.name=local",
        "attention.name=truncated",
    ]
    assert all(list(line.get_xdata()) == [4, 16, 64] for line in lines)
    assert list(lines[0].get_ydata()) == pytest.approx([0.6, 0.6, 0.6])
    assert len(ax.collections) == 2  # one ± std band per line
    assert ax.get_xscale() == "log" and ax.get_xlabel() == "attention.window"

    for window in (4, 8, 16):  # 16 / 4 < 10: a linear axis
        write_windowed(tmp_path / "narrow" / str(window), "local", window, 0, 0.5)
    (ax,) = report_figure(*rows_of(tmp_path / "narrow", group), "test/acc", 100.0).axes
    (line,) = ax.get_lines()
    assert ax.get_xscale() == "linear" and list(line.get_ydata()) == pytest.approx([50.0] * 3)
    assert not ax.collections  # one run per group: no std, no band


def test_plot_takes_the_pivot_as_x_when_several_fields_are_numeric(tmp_path):
    for d_model in (32, 64):
        for window in (2, 4):
            path = tmp_path / f"{d_model}_{window}"
            write_windowed(path, "local", window, 0, 0.5)
            summary = json.loads((path / "summary.json").read_text())
            summary["plugins"]["model"]["d_model"] = d_model
            (path / "summary.json").write_text(json.dumps(summary))
    rows, group = rows_of(tmp_path, "model.d_model,attention.window")
    (ax,) = report_figure(rows, group, "test/acc").axes
    assert ax.get_xlabel() == "attention.window" and len(ax.get_lines()) == 2  # the last field
    (ax,) = report_figure(rows, group, "test/acc", pivot="model.d_model").axes
    assert ax.get_xlabel() == "model.d_model"
    assert [line.get_label() for line in ax.get_lines()] == [
        "attention.window=2",
        "attention.window=4",
    ]
