"""The studies parallelism, heads_and_scores, graph and speech_window: each verdict rule on
numbers made by hand (the expected verdict worked out from the rule's text), and each study
run with --quick (synthetic data, tiny settings) through `attnbench study`."""

from __future__ import annotations

import json
import math
import sys

import pytest
from conftest import assert_study_outputs, cli, quick_study

from attnbench import registry
from attnbench.study import VERDICTS, Results, stat_of

OURS = ("parallelism", "heads_and_scores", "graph", "speech_window")
ENV = {"OMP_NUM_THREADS": "1"}


def study(name: str):
    return registry.get("study", name).cls()


def row(sweep: str, metric: str, values: list[float], **fields) -> dict:
    """One hand-made result row: mean ± std of the given per-seed values."""
    s = stat_of(values)
    return {"sweep": sweep, **fields, "metric": metric, "mean": s.mean, "std": s.std, "n": s.n}


def spread(value: float, d: float) -> list[float]:
    """Three seeds around ``value``: sample std exactly ``d``."""
    return [value - d, value, value + d]


# ----------------------------------------------------------------------------- parallelism


def parallelism_results(
    slopes: dict[str, float], at_n: dict[str, dict[int, float]], fitted: int = 4
) -> Results:
    made = [
        {
            "sweep": "slope",
            "model": m,
            "N": ">=256",
            "metric": "time_ms",
            "mean": k,
            "std": None,
            "n": fitted,
        }
        for m, k in slopes.items()
    ]
    for model, times in at_n.items():
        made += [
            row("step", "time_ms", [ms], model=model, N=n, device="cpu") for n, ms in times.items()
        ]
    return Results(made)


@pytest.mark.parametrize(
    "rnn, transformer, times, expected",
    [
        # (a) 1.0 >= 0.8, (b) 0.3 <= 0.8, (c) 500 ms > 20 ms at N=1024
        (1.0, 0.3, {"rnn": 500.0, "transformer": 20.0}, "supported"),
        # (b) 1.3 > 0.8 fails, (c) 100 < 200 fails
        (1.0, 1.3, {"rnn": 100.0, "transformer": 200.0}, "refuted"),
        # (b) fails, (c) holds
        (1.0, 1.3, {"rnn": 300.0, "transformer": 200.0}, "mixed"),
        # (a) 0.5 < 0.8 fails; (b) 0.2 <= 0.3 and (c) hold
        (0.5, 0.2, {"rnn": 300.0, "transformer": 200.0}, "mixed"),
    ],
)
def test_parallelism_rule(rnn, transformer, times, expected):
    at_n = {m: {256: ms / 4, 1024: ms} for m, ms in times.items()}
    found = study("parallelism").verdict(
        parallelism_results({"rnn": rnn, "transformer": transformer}, at_n)
    )
    assert found.verdict == expected
    assert found.numbers["largest N"] == 1024


def test_parallelism_compares_at_the_largest_n_both_reached():
    """The LSTM alone reached N=2048 (the transformer's larger sizes were skipped): the
    comparison is at 1024, where the LSTM is faster; with (b) failing too, refuted."""
    at_n = {"rnn": {1024: 50.0, 2048: 9000.0}, "transformer": {1024: 80.0}}
    found = study("parallelism").verdict(
        parallelism_results({"rnn": 1.0, "transformer": 1.5}, at_n)
    )
    assert found.numbers["largest N"] == 1024
    assert found.numbers["LSTM / transformer time at largest N"] == pytest.approx(50 / 80)
    assert found.verdict == "refuted"


def test_parallelism_is_inconclusive_with_one_size_fitted():
    results = parallelism_results({"rnn": 1.0, "transformer": 0.2}, {}, fitted=1)
    assert study("parallelism").verdict(results).verdict == "inconclusive"


def test_parallelism_reads_slopes_and_epoch_times_from_the_measurements():
    s = {"sizes": [256, 512, 1024], "fit_from": 512, "batch": 8}
    measured = (
        [
            {
                "model": "rnn",
                "N": n,
                "device": "cpu",
                "status": "ok",
                "time_ms": 0.1 * n,
                "peak_mb": 1.0,
                "note": "",
            }
            for n in (256, 512, 1024)
        ]
        + [
            {
                "model": "transformer",
                "N": n,
                "device": "cpu",
                "status": "ok",
                "time_ms": 1e-4 * n**2,
                "peak_mb": 1.0,
                "note": "",
            }
            for n in (256, 512)
        ]
        + [
            {
                "model": "transformer",
                "N": 1024,
                "device": "cpu",
                "status": "failed",
                "note": "OutOfMemoryError: x",
            }
        ]
    )
    results = type(study("parallelism")).read(measured, s)
    assert results.stat("time_ms", sweep="slope", model="rnn").mean == pytest.approx(1.0)
    assert results.stat("time_ms", sweep="slope", model="rnn").n == 2  # 512 and 1024
    assert results.stat("time_ms", sweep="slope", model="transformer").n == 1  # 1024 failed
    # 25.6 ms a step, 65536 / (8 * 256) = 32 steps an epoch: 0.8192 s
    epoch = results.stat("epoch_s", sweep="step", model="rnn", N=256).mean
    assert epoch == pytest.approx(0.8192)
    assert [f["run"] for f in results.failed] == ["transformer N=1024"]


# ----------------------------------------------------------------------------- heads_and_scores


def heads_results(acc: dict[str, dict[tuple[int, str], float]], time: dict[str, dict]) -> Results:
    made = []
    for task, by_variant in acc.items():
        for (h, score), value in by_variant.items():
            fields = {"model.heads": h, "attention.score": score}
            made.append(row(task, "test/acc", spread(value, 0.002), **fields))
            made.append(row(task, "time/epoch_s", spread(time[task][h, score], 0.5), **fields))
    return Results(made)


def variants(h1: float, h4: float, dot: float = 0.0, additive: float = 0.0) -> dict:
    """Values per (heads, score): the heads' base plus the score's offset."""
    return {
        (h, s): base + extra
        for h, base in ((1, h1), (4, h4))
        for s, extra in (("dot", dot), ("additive", additive))
    }


FAST_DOT = variants(10.0, 10.0, 0.0, 10.0)  # additive 20 s, dot 10 s an epoch
SAME_TIME = variants(10.0, 10.0)


@pytest.mark.parametrize(
    "acc, time, expected",
    [
        # H: 0.82 - 0.80 > 0.004 with both scores; A: equal; T: 20 vs 10 s: 6 of 6
        ({"sst2": variants(0.80, 0.82), "pos": variants(0.90, 0.92)}, FAST_DOT, "supported"),
        # heads never matter, scores equal, dot faster: A and T hold on both tasks, 4 of 6
        ({"sst2": variants(0.80, 0.80), "pos": variants(0.90, 0.90)}, FAST_DOT, "mixed"),
        # only A holds (on both tasks): 2 of 6
        ({"sst2": variants(0.80, 0.80), "pos": variants(0.90, 0.90)}, SAME_TIME, "refuted"),
        # additive 0.03 above dot everywhere and no head effect; T holds: 2 of 6
        (
            {"sst2": variants(0.8, 0.8, 0, 0.03), "pos": variants(0.9, 0.9, 0, 0.03)},
            FAST_DOT,
            "refuted",
        ),
    ],
)
def test_heads_and_scores_rule(acc, time, expected):
    times = {"sst2": time, "pos": time}
    assert study("heads_and_scores").verdict(heads_results(acc, times)).verdict == expected


def test_heads_and_scores_half_the_checks_is_refuted():
    """All three hold on SST-2; on POS one head beats four and additive is slower only at
    one head count, and additive beats dot: 3 of 6 is at most half, so refuted."""
    pos = {(1, "dot"): 0.92, (1, "additive"): 0.95, (4, "dot"): 0.90, (4, "additive"): 0.90}
    pos_time = {(1, "dot"): 10.0, (1, "additive"): 20.0, (4, "dot"): 10.0, (4, "additive"): 10.0}
    results = heads_results(
        {"sst2": variants(0.80, 0.82), "pos": pos}, {"sst2": FAST_DOT, "pos": pos_time}
    )
    found = study("heads_and_scores").verdict(results)
    assert found.verdict == "refuted"
    assert found.numbers["sst2 (H) 4 heads beat 1"] and not found.numbers["pos (H) 4 heads beat 1"]


def test_heads_need_four_to_win_somewhere_and_lose_nowhere():
    """4 heads beat 1 with dot but 1 beats 4 with additive: (H) fails on that task, while
    (A) holds there (additive is never above dot at the same head count)."""
    sst2 = {(1, "dot"): 0.82, (4, "dot"): 0.84, (1, "additive"): 0.82, (4, "additive"): 0.80}
    results = heads_results(
        {"sst2": sst2, "pos": variants(0.90, 0.92)}, {"sst2": FAST_DOT, "pos": FAST_DOT}
    )
    found = study("heads_and_scores").verdict(results)
    assert not found.numbers["sst2 (H) 4 heads beat 1"]
    assert found.verdict == "mixed"  # 5 of 6


def test_heads_and_scores_is_inconclusive_without_a_variant():
    acc = {"sst2": variants(0.80, 0.82), "pos": variants(0.90, 0.92)}
    del acc["pos"][4, "additive"]
    found = study("heads_and_scores").verdict(
        heads_results(acc, {"sst2": FAST_DOT, "pos": FAST_DOT})
    )
    assert found.verdict == "inconclusive" and "pos heads=4 score=additive" in found.summary


# ----------------------------------------------------------------------------- graph


def graph_results(graph: float | None, dot: float | None, mlp: float | None) -> Results:
    made = []
    for name, value in (("graph", graph), ("dot", dot)):
        if value is not None:
            made.append(
                row("attention", "test/acc", spread(value, 0.01), **{"attention.name": name})
            )
            made.append(row("attention", "time/epoch_s", [1.0, 1.1], **{"attention.name": name}))
    if mlp is not None:
        made.append(row("mlp", "test/acc", spread(mlp, 0.01), **{"model.name": "mlp"}))
        made.append(row("mlp", "time/epoch_s", [0.1, 0.1], **{"model.name": "mlp"}))
    return Results(made)


@pytest.mark.parametrize(
    "graph, dot, mlp, expected",
    [
        (0.80, 0.32, 0.58, "supported"),  # gaps 0.48 and 0.22 > 0.02
        (0.60, 0.60, 0.60, "refuted"),
        (0.50, 0.60, 0.70, "refuted"),  # graph worst
        (0.80, 0.32, 0.79, "mixed"),  # 0.01 above the MLP: inside the two stds
        (0.80, 0.80, 0.50, "mixed"),
        (0.80, 0.32, None, "inconclusive"),
    ],
)
def test_graph_rule(graph, dot, mlp, expected):
    assert study("graph").verdict(graph_results(graph, dot, mlp)).verdict == expected


# ----------------------------------------------------------------------------- speech_window


def speech_results(acc: dict, cost: dict, dot: tuple[float, float] | None) -> Results:
    made = []
    for w, value in acc.items():
        fields = {"attention.name": "truncated", "attention.window": w}
        made.append(row("window", "test/acc", spread(value, 0.005), **fields))
        made.append(row("window", "attn/test_ms", spread(cost[w], 5.0), **fields))
    if dot is not None:
        made.append(row("dot", "test/acc", spread(dot[0], 0.005), **{"attention.name": "dot"}))
        made.append(row("dot", "attn/test_ms", spread(dot[1], 5.0), **{"attention.name": "dot"}))
    return Results(made)


RISING = {2: 100.0, 4: 110.0, 8: 130.0, 16: 160.0, 32: 220.0}


@pytest.mark.parametrize(
    "acc, cost, dot, expected",
    [
        # best window 8 (0.92, first of the ties) = dot's 0.92; all far cheaper than 700;
        # 0.92 beats window 2's 0.85, 220 beats 100
        ({2: 0.85, 4: 0.90, 8: 0.92, 16: 0.92, 32: 0.92}, RISING, (0.92, 700.0), "supported"),
        # dot 0.22 above every window, and every window costs more than dot
        (dict.fromkeys(RISING, 0.70), dict.fromkeys(RISING, 800.0), (0.92, 700.0), "refuted"),
        # even window 2 matches dot: (3) fails (the best window is the smallest)
        (dict.fromkeys(RISING, 0.92), RISING, (0.92, 700.0), "mixed"),
        # windows lose to dot but are cheaper: (1) fails, (2) holds
        ({2: 0.6, 4: 0.7, 8: 0.8, 16: 0.8, 32: 0.8}, RISING, (0.92, 700.0), "mixed"),
        (dict.fromkeys(RISING, 0.92), RISING, None, "inconclusive"),
    ],
)
def test_speech_window_rule(acc, cost, dot, expected):
    found = study("speech_window").verdict(speech_results(acc, cost, dot))
    assert found.verdict == expected


def test_speech_window_best_window_and_its_speedup():
    acc = {2: 0.85, 4: 0.93, 8: 0.92}
    found = study("speech_window").verdict(
        speech_results(acc, {2: 100.0, 4: 140.0, 8: 200.0}, (0.92, 700.0))
    )
    assert found.numbers["best window"] == 4
    assert found.numbers["dot / window 4 attention time"] == pytest.approx(5.0)


# ----------------------------------------------------------------------------- quick runs


@pytest.fixture(scope="module", params=OURS)
def quick(request, tmp_path_factory):
    return quick_study(request, tmp_path_factory)


def test_each_study_runs_quick_and_writes_its_report(quick):
    name, out, done = quick
    assert done.returncode == 0, done.stderr[-2000:]
    assert_study_outputs(out)
    data = json.loads((out / "results.json").read_text())
    assert data["verdict"] in VERDICTS and data["quick"] is True
    assert data["rows"] and all(math.isfinite(r["mean"]) for r in data["rows"])
    report = (out / "report.md").read_text()
    assert study(name).rule in report and f"Verdict: **{data['verdict']}**" in report
    # the verdict is the rule applied to the numbers written
    rows = [{k: (math.nan if v is None else v) for k, v in r.items()} for r in data["rows"]]
    assert study(name).verdict(Results(rows)).verdict == data["verdict"]


EXPECTED_GROUPS = {  # metric -> the groups every quick run must give it
    "heads_and_scores": ("time/epoch_s", 8),  # 2 tasks x 2 head counts x 2 scores
    "graph": ("time/epoch_s", 3),
    "speech_window": ("attn/test_ms", 3),  # windows 2, 8 and dot
    "parallelism": ("time_ms", 8),  # 2 backbones x 3 sizes, and 2 slopes
}


def test_each_study_gives_its_timing_for_every_variant(quick):
    name, out, done = quick
    metric, groups = EXPECTED_GROUPS[name]
    data = json.loads((out / "results.json").read_text())
    found = [r for r in data["rows"] if r["metric"] == metric]
    assert len(found) == groups
    assert all(r["mean"] > 0 for r in found if r["sweep"] != "slope")


def test_a_rerun_of_the_measuring_study_reuses_its_measurements(quick):
    name, out, done = quick
    if name != "parallelism":
        pytest.skip("training studies resume through the harness (tests/test_study.py)")
    cache = out / "bench" / "parallelism.json"
    before = (cache.stat().st_mtime_ns, json.loads((out / "results.json").read_text())["rows"])
    again = cli("study", name, "--quick", "--out", str(out), env=ENV, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    after = (cache.stat().st_mtime_ns, json.loads((out / "results.json").read_text())["rows"])
    assert after == before


def test_a_failing_benchmark_stops_the_measuring_study_with_one_line(tmp_path, monkeypatch):
    import subprocess

    complexity = study("complexity")
    module = sys.modules[type(complexity).__module__]
    failed = subprocess.CompletedProcess([], returncode=3)
    monkeypatch.setattr(module.subprocess, "run", lambda *a, **k: failed)
    with pytest.raises(registry.AttnbenchError, match=r"benchmark stopped \(exit 3"):
        complexity.measure(tmp_path, True, "cpu")
    assert not (tmp_path / "bench" / "args.json").exists()  # nothing recorded as done
