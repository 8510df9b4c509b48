"""``attnbench plot``: learning curves from the runs' CSV logs, overlaid or grouped (mean ±
std bands). Run directories are written by hand: summary.json and a Lightning-style sparse
csv/metrics.csv with the values stated here."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from attnbench.analysis.plot import main as plot_main
from attnbench.analysis.plot import plot_runs
from attnbench.registry import ConfigError

HEADER = "epoch,step,test/acc,train/loss,val/acc,val/loss"


def write_run(
    path: Path, rows: list[str], attention: str = "dot", seed: int = 1, status: str = "ok"
) -> Path:
    (path / "csv").mkdir(parents=True, exist_ok=True)
    (path / "csv" / "metrics.csv").write_text("\n".join([HEADER, *rows]) + "\n")
    summary = {
        "status": status,
        "seed": seed,
        "metrics": {"val/acc": 0.5},
        "plugins": {"attention": {"name": attention}, "model": {"name": "transformer"}},
    }
    (path / "summary.json").write_text(json.dumps(summary))
    return path


def val_rows(first: float, second: float) -> list[str]:
    """val/acc ``first`` at step 9 (epoch 0), ``second`` at step 19 (epoch 1)."""
    return [
        "0,4,,1.0,,",
        f"0,9,,,{first},0.9",
        "1,14,,0.6,,",
        f"1,19,,,{second},0.5",
    ]


def test_sparse_rows_become_curves_against_step_or_epoch(tmp_path):
    run = write_run(
        tmp_path / "run",
        [
            "0,4,,1.0,,",
            "0,9,,0.8,,",
            "0,9,,,0.5,0.9",
            "1,14,,0.6,,",
            "1,19,,0.4,,",
            "1,19,,,0.7,0.5",
            "1,24,,nan,,",  # a non-finite value is no point
            "2,25,0.75,,,",  # the test row: no curve
        ],
    )
    loss, acc = plot_runs([run], "val/acc", "step").axes
    train, val = loss.get_lines()
    assert list(train.get_xdata()) == [4, 9, 14, 19]
    assert list(train.get_ydata()) == [1.0, 0.8, 0.6, 0.4]
    assert list(val.get_xdata()) == [9, 19] and list(val.get_ydata()) == [0.9, 0.5]
    (metric,) = acc.get_lines()
    assert list(metric.get_ydata()) == [0.5, 0.7]
    assert acc.get_title() == "val/acc" and acc.get_xlabel() == "step"

    loss, acc = plot_runs([run], "val/acc", "epoch").axes
    train = loss.get_lines()[0]
    assert list(train.get_xdata()) == [0, 1]
    assert list(train.get_ydata()) == pytest.approx([0.9, 0.5])  # the epoch's mean
    assert acc.get_xlabel() == "epoch"


def test_several_runs_are_overlaid_one_colour_each_and_a_diverged_one_says_so(tmp_path):
    write_run(tmp_path / "sweep" / "0", val_rows(0.5, 0.6), seed=0)
    write_run(tmp_path / "sweep" / "1", val_rows(0.55, 0.65), seed=1)
    write_run(tmp_path / "sweep" / "10", val_rows(0.2, 0.1), seed=2, status="diverged")
    loss, acc = plot_runs([tmp_path / "sweep"]).axes
    assert len(loss.get_lines()) == 6  # train and val loss of each of the 3 runs
    assert len(acc.get_lines()) == 3 and not acc.collections  # lines, no bands
    assert len({line.get_color() for line in acc.get_lines()}) == 3
    legend = [t.get_text() for t in acc.get_legend().get_texts()]
    assert legend == ["0", "1", "10 (diverged)"]  # job 10 after job 1


def test_a_group_is_its_mean_with_a_std_band_and_runs_not_ok_are_left_out(tmp_path, capsys):
    sweep = tmp_path / "sweep"
    write_run(sweep / "a", val_rows(0.5, 0.7), "dot", seed=1)
    write_run(sweep / "b", val_rows(0.7, 0.9), "dot", seed=2)
    write_run(sweep / "c", val_rows(0.4, 0.45), "window", seed=1)
    write_run(sweep / "d", val_rows(0.0, 0.0), "window", seed=2, status="failed")
    _, acc = plot_runs([sweep], "val/acc", "step", ["attention.name"]).axes
    dot, window = acc.get_lines()
    assert list(dot.get_ydata()) == pytest.approx([0.6, 0.8])
    assert list(window.get_ydata()) == pytest.approx([0.4, 0.45])  # d is not in the mean
    assert [t.get_text() for t in acc.get_legend().get_texts()] == [
        "attention.name=dot (n=2)",
        "attention.name=window",
    ]
    (band,) = acc.collections  # one run has no std: only dot has a band
    ys = band.get_paths()[0].vertices[:, 1]
    std = math.sqrt(0.02)  # sample std of (0.5, 0.7) and of (0.7, 0.9)
    assert ys.min() == pytest.approx(0.6 - std) and ys.max() == pytest.approx(0.8 + std)
    assert "leaving out d: failed" in capsys.readouterr().err


def test_the_command_writes_png_and_svg_and_reads_no_training_stack(tmp_path):
    sweep = tmp_path / "sweep"
    write_run(sweep / "a", val_rows(0.5, 0.7), "dot", seed=1)
    write_run(sweep / "b", val_rows(0.7, 0.9), "dot", seed=2)
    out = tmp_path / "figs" / "curves.png"
    code = (
        "import sys\n"
        "from attnbench.analysis.plot import main\n"
        f"status = main([{str(sweep)!r}, '--group', 'attention.name', '--out', {str(out)!r}])\n"
        "heavy = [m for m in ('torch', 'pytorch_lightning') if m in sys.modules]\n"
        "print(status, heavy)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "0 []"
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    svg = out.with_suffix(".svg").read_text()
    assert svg.lstrip().startswith("<?xml") and "attention.name=dot (n=2)" in svg


def test_a_loss_metric_draws_one_panel(tmp_path):
    run = write_run(tmp_path / "run", val_rows(0.5, 0.7))
    (panel,) = plot_runs([run], "val/loss").axes
    assert len(panel.get_lines()) == 2


def test_bad_input_is_a_one_line_config_error(tmp_path):
    write_run(tmp_path / "sweep" / "a", val_rows(0.5, 0.7))
    (tmp_path / "empty").mkdir()
    for args, expected in (
        ([str(tmp_path / "nowhere")], "nowhere: no such directory"),
        ([str(tmp_path / "empty")], "empty: holds no csv/metrics.csv"),
        ([str(tmp_path / "sweep"), "--metric", "val/ac"], "no run logged 'val/ac'"),
        ([str(tmp_path / "sweep"), "--metric", "val/ac"], "did you mean 'val/acc'"),
        (
            [str(tmp_path / "sweep"), "--group", "model.nme"],
            "no run has the --group field 'model.nme'; did you mean 'model.name'",
        ),
    ):
        with pytest.raises(ConfigError, match=expected.replace("(", r"\(")) as raised:
            plot_main([*args, "--out", str(tmp_path / "out.png")])
        assert "\n" not in str(raised.value)
    assert not (tmp_path / "out.png").exists()
