"""`attnbench bench throughput|maps|report` (attnbench.perf): the device and precision the
two training loops use, and the synthetic run directories the report benchmark reads."""

from __future__ import annotations

import csv
import json

import pytest
import torch
from torch.utils.data import DataLoader

from attnbench import perf
from attnbench.registry import ConfigError
from attnbench.report import main as report_main


def test_device_overrides_choose_the_trainer():
    assert perf.device_overrides("cpu", []) == ["trainer.accelerator=cpu"]
    assert perf.device_overrides("cuda", ["task=pos"]) == [
        "trainer=gpu",  # bf16-mixed, as the GPU presets train
        "trainer.accelerator=gpu",
        "trainer.devices=1",
    ]
    # a trainer the user chose stays; the accelerator still follows --device
    assert perf.device_overrides("cuda", ["trainer=ddp"]) == [
        "trainer.accelerator=gpu",
        "trainer.devices=1",
    ]


@pytest.mark.parametrize(
    "precision,dtype",
    [("32", None), (32, None), ("32-true", None), ("bf16-mixed", torch.bfloat16)]
    + [("16-mixed", torch.float16)],
)
def test_the_hand_written_loop_autocasts_as_the_trainer(precision, dtype):
    assert perf.autocast_dtype(precision) == dtype


def test_a_precision_without_counterpart_is_one_line():
    with pytest.raises(ConfigError, match="trainer.precision=bf16-true .* use 32, bf16-mixed"):
        perf.autocast_dtype("bf16-true")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_throughput_without_a_gpu_is_refused():
    with pytest.raises(ConfigError, match="no CUDA device is available; use --device cpu"):
        perf.throughput([], 2, None, "cuda")


def test_pinned_loader_keeps_the_batches():
    data = torch.arange(10)
    loader = DataLoader(data, batch_size=3, shuffle=False)
    pinned = perf._pinned(loader)
    assert pinned.pin_memory
    assert [b.tolist() for b in pinned] == [b.tolist() for b in loader]


def test_scaled_csv_scales_metrics_not_steps_or_losses(tmp_path):
    src, dst = tmp_path / "a.csv", tmp_path / "b.csv"
    src.write_text("epoch,step,val/acc,val/loss\n0,3,0.5,0.7\n1,4,,0.6\n2,5,0.95,0.5\n")
    perf._scaled_csv(src, dst, 1.1)
    rows = list(csv.DictReader(open(dst)))
    assert [(r["epoch"], r["step"]) for r in rows] == [("0", "3"), ("1", "4"), ("2", "5")]
    assert [r["val/loss"] for r in rows] == ["0.7", "0.6", "0.5"]
    assert float(rows[0]["val/acc"]) == pytest.approx(0.55)
    assert rows[1]["val/acc"] == ""
    assert float(rows[2]["val/acc"]) == 1.0  # an accuracy stays an accuracy


def test_the_report_reads_the_synthetic_runs_as_groups(tmp_path):
    """A real small run, copied into 6 runs over 3 attention names: the report pools them
    into 3 groups of 2 seeds and leaves none out."""
    run_dir = perf.small_run(tmp_path, [])
    assert (run_dir / "summary.json").is_file()
    runs = perf.synthetic_runs(run_dir, tmp_path / "runs", 6, ["a1", "a2", "a3"])
    assert len(runs) == 6 and not (runs[0] / "checkpoints").exists()
    out = tmp_path / "report.json"
    report_main([*map(str, runs), "--group", perf.GROUP, "--json", str(out)])
    found = json.loads(out.read_text())
    assert sorted((r["attention.name"], r["n"]) for r in found["rows"]) == [
        ("a1", 2),
        ("a2", 2),
        ("a3", 2),
    ]
    assert not found["left_out"] and not found["no_value"]
    accs = {json.loads((r / "summary.json").read_text())["metrics"]["test/acc"] for r in runs}
    assert len(accs) == 6  # each copy has its own metric values


def test_overrides_may_follow_the_options():
    args = perf.build_parser().parse_intermixed_args(
        ["throughput", "--device", "cuda", "--epochs", "2", "task=pos", "seed=1"]
    )
    assert (args.what, args.device, args.epochs) == ("throughput", "cuda", 2)
    assert args.overrides == ["task=pos", "seed=1"]
