"""The studies long_range, data_size and receptive_field: each verdict rule on numbers made
by hand (expected verdicts worked out from the rule text), each study run with --quick
(files written, the verdict re-derived from results.json, a re-run skipping finished jobs),
and the pieces they rest on (the image task's train_fraction, reach and distance helpers)."""

from __future__ import annotations

import json
import math
import sys

import pytest
from conftest import assert_study_outputs, cli, quick_study

from attnbench import registry
from attnbench.registry import ConfigError
from attnbench.study import VERDICTS, Results, stat_of

STUDIES = ("long_range", "data_size", "receptive_field")
ENV = {"OMP_NUM_THREADS": "1"}


def study(name: str):
    return registry.get("study", name).cls()


def module_of(name: str):
    return sys.modules[registry.get("study", name).cls.__module__]


def row(sweep: str, metric: str, values: list[float], **fields) -> dict:
    s = stat_of(values)
    return {"sweep": sweep, **fields, "metric": metric, "mean": s.mean, "std": s.std, "n": s.n}


def pm(v: float) -> list[float]:
    """Two seeds at v ± 0.01 (std 0.0141)."""
    return [v - 0.01, v + 0.01]


# ----------------------------------------------------------------------------- long_range

LENGTHS = [32, 64, 128, 256, 512]


def long_range_rows(curves: dict[str, list[float]], reach: dict[str, int]) -> Results:
    made = []
    for model, accs in curves.items():
        for n, acc in zip(LENGTHS, accs):
            made.append(row(model, "test/acc", pm(acc), **{"task.length": n}))
            if model in reach:
                made.append(row(model, "reach", [reach[model]] * 2, **{"task.length": n}))
    return Results(made)


FLAT = [0.9] * 5
FADING = [0.9, 0.8, 0.6, 0.4, 0.3]
# truncated reach 32: every first marker in reach at N=32 (N-1 <= 32), none from N=128
# (N/2 > 32); CNN reach 63: all at N=64, none from N=128
REACH = {"truncated": 32, "cnn": 63}
WINDOWED = [0.9, 0.7, 0.45, 0.45, 0.45]
CONV = [0.9, 0.9, 0.45, 0.45, 0.45]


@pytest.mark.parametrize(
    "lstm, dot, expected",
    [
        (FADING, FLAT, "supported"),  # (a)-(d) all hold
        (FLAT, FLAT, "refuted"),  # the LSTM holds too: (a) fails; dot(512) not > lstm(512)
        (FADING, FADING, "mixed"),  # (a) holds, (b) fails (dot drops 0.6 too)
    ],
)
def test_long_range_rule(lstm, dot, expected):
    rows = long_range_rows({"lstm": lstm, "dot": dot, "truncated": WINDOWED, "cnn": CONV}, REACH)
    found = study("long_range").verdict(rows)
    assert found.verdict == expected, found.summary


def test_long_range_rule_judges_the_window_against_full_attention():
    """Truncated drops beyond its reach, but so does dot there: (c) fails, so mixed."""
    dot = [0.9, 0.9, 0.45, 0.9, 0.9]
    rows = long_range_rows({"lstm": FADING, "dot": dot, "truncated": WINDOWED, "cnn": CONV}, REACH)
    found = study("long_range").verdict(rows)
    assert found.verdict == "mixed"
    assert found.numbers["(c) truncated fails beyond its window"] is False
    assert found.numbers["truncated Nin, Nout"] == "32, 128"
    assert found.numbers["cnn Nin, Nout"] == "64, 128"


def test_long_range_rule_is_inconclusive_without_a_reach():
    rows = long_range_rows(
        {"lstm": FADING, "dot": FLAT, "truncated": WINDOWED, "cnn": CONV}, {"truncated": 32}
    )
    found = study("long_range").verdict(rows)
    assert found.verdict == "inconclusive" and "cnn" in found.summary


def test_cnn_reach_is_the_left_padding_of_its_layers():
    reach = module_of("long_range").cnn_reach
    assert reach(3, 2, 6) == 1 + 2 + 4 + 8 + 16 + 32
    assert reach(5, 1, 3) == 2 + 2 + 2
    assert reach(4, 1, 2) == 1 + 1  # even kernel: (4-1)//2 on the left


# ----------------------------------------------------------------------------- data_size

FRACTIONS = [0.01, 0.1, 1.0]


def data_rows(curves: dict[str, dict[str, list[float]]]) -> Results:
    made = []
    for dataset, by_model in curves.items():
        for model, accs in by_model.items():
            for f, acc in zip(FRACTIONS, accs):
                fields = {"task.dataset": dataset, "task.train_fraction": f, "model.name": model}
                made.append(row(dataset, "test/acc", pm(acc), **fields))
    return Results(made)


CATCHES_UP = {"cnn": [0.8, 0.95, 0.98], "transformer": [0.6, 0.9, 0.985]}  # holds
CNN_AHEAD = {"cnn": [0.8, 0.9, 0.98], "transformer": [0.7, 0.8, 0.88]}  # partial: gap 0.1 -> 0.1
TR_AHEAD = {"cnn": [0.6, 0.9, 0.98], "transformer": [0.8, 0.85, 0.9]}  # fails


@pytest.mark.parametrize(
    "mnist, digits, expected",
    [
        (CATCHES_UP, CATCHES_UP, "supported"),
        (TR_AHEAD, TR_AHEAD, "refuted"),
        (CNN_AHEAD, CNN_AHEAD, "mixed"),  # the CNN wins everywhere by the same margin
        (CATCHES_UP, TR_AHEAD, "mixed"),
    ],
)
def test_data_size_rule(mnist, digits, expected):
    found = study("data_size").verdict(data_rows({"mnist": mnist, "digits": digits}))
    assert found.verdict == expected, found.summary


def test_data_size_names_the_crossover():
    found = study("data_size").verdict(data_rows({"mnist": CATCHES_UP}))
    assert found.numbers["mnist: crossover (smallest fraction where transformer >= cnn)"] == "1"
    found = study("data_size").verdict(data_rows({"mnist": CNN_AHEAD}))
    assert found.numbers["mnist: crossover (smallest fraction where transformer >= cnn)"] == "none"


def test_data_size_rule_is_inconclusive_without_an_end_point():
    results = data_rows({"mnist": CATCHES_UP})
    results.rows = [
        r for r in results.rows if (r["task.train_fraction"], r["model.name"]) != (1.0, "cnn")
    ]
    found = study("data_size").verdict(results)
    assert found.verdict == "inconclusive" and "mnist" in found.summary


def test_train_fraction_is_a_fixed_stratified_subset():
    full = registry.build("task", "image", data_dir=".", dataset="digits")
    part = registry.build("task", "image", data_dir=".", dataset="digits", train_fraction=0.1)
    again = registry.build("task", "image", data_dir=".", dataset="digits", train_fraction=0.1)
    for task in (full, part, again):
        task.setup()
    y_full, y_part = full.splits["train"].tensors["label"], part.splits["train"].tensors["label"]
    assert len(y_part) == 125  # a tenth of 1,257, rounded down as scikit-learn does
    for c in range(10):  # every class keeps a tenth of its images, give or take one
        assert abs(int((y_part == c).sum()) - 0.1 * int((y_full == c).sum())) <= 1
    assert part.splits["train"].tensors["image"].equal(again.splits["train"].tensors["image"])
    assert len(part.splits["test"]) == len(full.splits["test"])  # evaluation stays whole


@pytest.mark.parametrize(
    "fraction, words",
    [(0.0, "(0, 1]"), (1.5, "(0, 1]"), (0.001, "classes"), (0.998, "task.train_fraction=1")],
)
def test_a_bad_train_fraction_is_refused_with_the_fix(fraction, words):
    with pytest.raises(ConfigError, match="task.train_fraction") as e:
        task = registry.build(
            "task", "image", data_dir=".", dataset="digits", train_fraction=fraction
        )
        task.setup()
    assert words in str(e.value) and "\n" not in str(e.value)


# ----------------------------------------------------------------------------- receptive_field


def field_rows(layers: list[list[float]], local: list[float], wide: list[float]) -> Results:
    made = []
    for i, values in enumerate(layers):
        made.append(row("transformer", f"dist/L{i}", values, **{"model.name": "transformer"}))
    for metric, values in (("heads/local", local), ("heads/global", wide)):
        made.append(row("transformer", metric, values, **{"model.name": "transformer"}))
    for metric, v in (("dist/kernel", 0.967), ("dist/uniform", 2.008)):
        made.append(row("transformer", metric, [v, v], **{"model.name": "transformer"}))
    return Results(made)


NEAR_TO_FAR = [[0.9, 1.0], [1.3, 1.4], [1.8, 1.9]]  # last - first = 0.9 > 2 x 0.0707
SAME = [[2.0, 2.0], [2.0, 2.0], [2.0, 2.0]]


@pytest.mark.parametrize(
    "layers, local, wide, expected",
    [
        (NEAR_TO_FAR, [2, 1], [3, 2], "supported"),
        (SAME, [0, 0], [12, 12], "refuted"),  # no depth trend, no local head
        (NEAR_TO_FAR, [0, 0], [8, 8], "mixed"),  # trend, but no head within a kernel
        (SAME, [2, 2], [4, 4], "mixed"),  # local and global heads, no trend with depth
        (NEAR_TO_FAR, [1, 0], [3, 3], "mixed"),  # half a local head per model: < 1
    ],
)
def test_receptive_field_rule(layers, local, wide, expected):
    found = study("receptive_field").verdict(field_rows(layers, local, wide))
    assert found.verdict == expected, found.summary


def test_receptive_field_rule_is_inconclusive_without_distances():
    found = study("receptive_field").verdict(Results([]))
    assert found.verdict == "inconclusive"


def test_window_distance_of_a_3x3_kernel_on_the_4x4_grid():
    """By hand: 4 corners see a 2x2 window (0, 1, 1, √2), 8 edge cells a 2x3 one
    (0, 1, 1, 1, √2, √2), 4 inner cells the 3x3 one (0, four 1s, four √2s)."""
    r2 = math.sqrt(2)
    corner, edge, inner = (2 + r2) / 4, (3 + 2 * r2) / 6, (4 + 4 * r2) / 9
    distance = module_of("receptive_field").window_distance
    assert distance(4, 4, 1) == pytest.approx((4 * corner + 8 * edge + 4 * inner) / 16)
    assert distance(2, 2, None) == pytest.approx((2 + r2) / 4)
    assert distance(4, 4, 3) == pytest.approx(distance(4, 4, None))  # the window covers all


# ----------------------------------------------------------------------------- quick runs


@pytest.fixture(scope="module", params=STUDIES)
def quick(request, tmp_path_factory):
    return quick_study(request, tmp_path_factory)


def test_each_study_runs_quick_and_writes_its_report(quick):
    name, out, done = quick
    assert done.returncode == 0, done.stderr[-2000:]
    assert_study_outputs(out)
    data = json.loads((out / "results.json").read_text())
    assert data["verdict"] in VERDICTS and data["quick"] is True and not data["failed"]
    report = (out / "report.md").read_text()
    assert study(name).rule in report and f"Verdict: **{data['verdict']}**" in report


def test_the_verdict_comes_from_the_written_numbers(quick):
    name, out, _ = quick
    data = json.loads((out / "results.json").read_text())
    rows = [{k: (math.nan if v is None else v) for k, v in r.items()} for r in data["rows"]]
    assert study(name).verdict(Results(rows)).verdict == data["verdict"]


def test_the_numbers_the_rules_read_come_from_each_runs_config(quick):
    name, out, _ = quick
    rows = json.loads((out / "results.json").read_text())["rows"]
    if name == "long_range":  # quick: CNN kernel 3, dilation 2, 2 layers; window 2 x 2 layers
        reach = {r["sweep"]: r["mean"] for r in rows if r["metric"] == "reach"}
        assert reach == {"cnn": 1 + 2, "truncated": 2 * 2}
    elif name == "data_size":
        fractions = {r["task.train_fraction"] for r in rows}
        assert fractions == {0.1, 1.0} and {r["model.name"] for r in rows} == {"cnn", "transformer"}
    else:  # 3 layers x 4 heads: every head is counted at most once
        counts = {r["metric"]: r["mean"] for r in rows if r["metric"].startswith("heads/")}
        assert 0 <= counts["heads/local"] + counts["heads/global"] <= 12
        kernel = next(r["mean"] for r in rows if r["metric"] == "dist/kernel")
        assert kernel == pytest.approx(0.9673, abs=1e-4)  # the hand-computed value above


def test_a_rerun_skips_the_finished_jobs(quick):
    name, out, _ = quick
    summaries = sorted((out / "runs").rglob("summary.json"))
    before = [(p, p.stat().st_mtime_ns) for p in summaries]
    done = cli("study", name, "--quick", "--out", str(out), env=ENV, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    assert [(p, p.stat().st_mtime_ns) for p in summaries] == before
    assert sorted((out / "runs").rglob("summary.json")) == summaries
