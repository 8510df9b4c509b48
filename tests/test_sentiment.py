"""Sentiment: SST-2 reading (labelled and GLUE's unlabeled test), predictions, end to end."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
import torch
from conftest import fast_dev_run

from attnbench import registry
from attnbench.data.text import DataError

ROWS = [
    ("a great , moving film ", 1),
    ("dull and tedious", 0),
    ("superb acting", 1),
    ("the plot is weak", 0),
] * 10


def write_sst2(folder: Path, unlabeled_test: bool = True) -> Path:
    """train/dev as GLUE (dev gzipped); test as GLUE's 'index<TAB>sentence' or labelled."""
    d = folder / "sentiment"
    d.mkdir(parents=True, exist_ok=True)
    body = "".join(f"{s}\t{y}\n" for s, y in ROWS)
    (d / "train.tsv").write_text("sentence\tlabel\n" + body)
    (d / "dev.tsv.gz").write_bytes(gzip.compress(("sentence\tlabel\n" + body).encode()))
    if unlabeled_test:
        test = "index\tsentence\n" + "".join(f"{i}\t{s}\n" for i, (s, _) in enumerate(ROWS[:7]))
    else:
        test = "sentence\tlabel\n" + body
    (d / "test.tsv").write_text(test)
    return folder


def test_fast_dev_run_synthetic_transformer(tmp_path):
    summary = fast_dev_run(["task=sentiment", "model=transformer", "model.d_model=32"], tmp_path)
    assert 0.0 <= summary["metrics"]["test/acc"] <= 1.0
    assert summary["predictions"] == {}


def test_fast_dev_run_sst2_shared(shared_data, tmp_path, monkeypatch):
    monkeypatch.setenv("ATTNBENCH_CACHE", str(tmp_path / "cache"))
    summary = fast_dev_run(
        ["task=sentiment", "task.dataset=sst2", f"data_dir={shared_data}", "model.d_model=32"],
        tmp_path,
    )
    assert "test/acc" in summary["metrics"]  # the shared test file carries labels


def test_sst2_shared_sizes(shared_data, tmp_path, monkeypatch):
    monkeypatch.setenv("ATTNBENCH_CACHE", str(tmp_path / "cache"))
    task = registry.build("task", "sentiment", data_dir=str(shared_data), dataset="sst2")
    task.setup()
    assert [len(task.splits[s]) for s in ("train", "val", "test")] == [67349, 872, 1821]
    assert task.unlabeled_splits == ()


def test_unlabeled_glue_test_is_predicted_not_scored(tmp_path, monkeypatch):
    monkeypatch.setenv("ATTNBENCH_CACHE", str(tmp_path / "cache"))
    data = write_sst2(tmp_path / "data")
    summary = fast_dev_run(
        ["task=sentiment", "task.dataset=sst2", f"data_dir={data}", "model.d_model=32"],
        tmp_path / "run",
    )
    assert not any(k.startswith("test/") for k in summary["metrics"])
    path = Path(summary["predictions"]["test"])
    assert path == tmp_path / "run" / "predictions_test.tsv"
    lines = path.read_text().splitlines()
    assert lines[0] == "index\tprediction"
    assert [line.split("\t")[0] for line in lines[1:]] == [str(i) for i in range(7)]
    assert {line.split("\t")[1] for line in lines[1:]} <= {"0", "1"}
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["predictions"]


def test_save_predictions_follows_glue_index(tmp_path, monkeypatch):
    monkeypatch.setenv("ATTNBENCH_CACHE", str(tmp_path / "cache"))
    data = write_sst2(tmp_path / "data")
    d = data / "sentiment"
    (d / "test.tsv").write_text("index\tsentence\n5\tgood\n9\tbad\n2\tfine\n")
    task = registry.build("task", "sentiment", data_dir=str(data), dataset="sst2")
    task.setup()
    assert task.unlabeled_splits == ("test",)
    outputs = [torch.tensor([[0.0, 1.0], [2.0, 0.0]]), torch.tensor([[0.0, 3.0]])]
    path = task.save_predictions("test", outputs, tmp_path)
    assert path.read_text() == "index\tprediction\n5\t1\n9\t0\n2\t1\n"


def test_bad_label_names_file_and_line(tmp_path, monkeypatch):
    monkeypatch.setenv("ATTNBENCH_CACHE", str(tmp_path / "cache"))
    data = write_sst2(tmp_path / "data")
    train = data / "sentiment" / "train.tsv"
    train.write_text(train.read_text() + "oops\tpositive\n")
    task = registry.build("task", "sentiment", data_dir=str(data), dataset="sst2")
    with pytest.raises(DataError, match=rf"train\.tsv:{len(ROWS) + 2}: label 'positive'"):
        task.setup()


def test_empty_file_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("ATTNBENCH_CACHE", str(tmp_path / "cache"))
    data = write_sst2(tmp_path / "data")
    (data / "sentiment" / "test.tsv").write_text("")
    task = registry.build("task", "sentiment", data_dir=str(data), dataset="sst2")
    with pytest.raises(DataError, match=r"test\.tsv: is empty"):
        task.setup()


def test_vocabulary_options(tmp_path, monkeypatch):
    monkeypatch.setenv("ATTNBENCH_CACHE", str(tmp_path / "cache"))
    data = write_sst2(tmp_path / "data")
    full = registry.build("task", "sentiment", data_dir=str(data), dataset="sst2")
    full.setup()
    capped = registry.build("task", "sentiment", data_dir=str(data), dataset="sst2", max_size=3)
    capped.setup()
    assert len(capped.vocab) == 2 + 3 < len(full.vocab)
    assert capped.cache_path != full.cache_path


def test_missing_data_says_where_and_how(tmp_path):
    task = registry.build("task", "sentiment", data_dir=str(tmp_path), dataset="sst2")
    with pytest.raises(DataError, match=r"sentiment/train\.tsv.*attnbench download sst2"):
        task.setup()
