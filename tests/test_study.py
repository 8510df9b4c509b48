"""Studies: `attnbench study` runs a study plugin's sweep through Hydra's multirun, writes
report.md, results.json, the figure and report.html, and judges the claim by a rule fixed in
code. Every built-in study runs with --quick here; each verdict rule is checked on numbers
made by hand."""

from __future__ import annotations

import json
import math
import os
import sys
import textwrap
from html import escape as html_escape
from pathlib import Path

import pytest
from conftest import assert_study_outputs, cli, quick_study

from attnbench import registry
from attnbench.analysis.report_html import data_uri
from attnbench.study import VERDICTS, Results, Sweep, Verdict, beats, stat_of
from attnbench.study.figures import fields_of
from attnbench.study.run import sweep_overrides

BUILT_IN = ("complexity", "context", "positions")
ENV = {"OMP_NUM_THREADS": "1"}


def study_class(name: str):
    return registry.get("study", name).cls


# ----------------------------------------------------------------------------- the CLI


def test_list_names_every_built_in_study_with_its_claim():
    done = cli("study", "list", env=ENV)
    assert done.returncode == 0, done.stderr
    for name in BUILT_IN:
        line = next(ln for ln in done.stdout.splitlines() if ln.startswith(name + " "))
        assert study_class(name).claim[:30] in line


def test_unknown_study_is_one_line_with_a_suggestion(tmp_path):
    done = cli("study", "contxt", "--out", str(tmp_path / "x"), env=ENV)
    assert done.returncode == 2
    assert "did you mean 'context'" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists()


def test_a_word_that_is_no_override_is_refused(tmp_path):
    done = cli("study", "positions", "--quick", "epochs", "--out", str(tmp_path), env=ENV)
    assert done.returncode == 2
    assert "'epochs' is not an override" in done.stderr


def test_study_is_a_verb_in_help():
    done = cli("--help", env=ENV)
    assert "study" in done.stdout and "attnbench study list" in done.stdout


def test_a_class_that_is_no_study_is_refused():
    class NotAStudy:
        pass

    with pytest.raises(registry.PluginContractError, match="attnbench.Study"):
        registry.register("study", "not_a_study_for_test")(NotAStudy)


# ----------------------------------------------------------------------------- the sweep


def test_user_overrides_replace_the_sweeps_own_and_launchers_pass_through():
    sweep = Sweep(
        "pos", ["experiment=compare_pos", "trainer.max_epochs=6"], {"model": ["a", "b"]}, []
    )
    args = sweep_overrides(
        sweep,
        [1, 2, 3],
        ["model=cnn", "trainer.max_epochs=1", "hydra/launcher=joblib"],
        gpu=True,
        sweep_dir=Path("/tmp/s"),
    )
    assert "model=cnn" in args and "model=a,b" not in args
    assert "trainer.max_epochs=1" in args and "trainer.max_epochs=6" not in args
    assert "hydra/launcher=joblib" in args and "experiment=compare_pos" in args
    assert "seed=1,2,3" in args and "trainer=gpu" in args
    assert args[-1] == "hydra.sweep.dir='/tmp/s'"
    no_gpu = sweep_overrides(sweep, [1], ["trainer=cpu"], gpu=True, sweep_dir=Path("/tmp/s"))
    assert "trainer=cpu" in no_gpu and "trainer=gpu" not in no_gpu


# ----------------------------------------------------------------------------- quick runs


@pytest.fixture(scope="module", params=BUILT_IN)
def quick(request, tmp_path_factory):
    return quick_study(request, tmp_path_factory)


def test_every_study_runs_quick_and_writes_its_report(quick):
    name, out, done = quick
    assert done.returncode == 0, done.stderr[-2000:]
    assert_study_outputs(out)
    assert (out / "figure.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    data = json.loads((out / "results.json").read_text())
    assert data["verdict"] in VERDICTS and data["quick"] is True
    assert data["rows"] and all(math.isfinite(r["mean"]) for r in data["rows"])
    report = (out / "report.md").read_text()
    cls = study_class(name)
    for text in (cls.claim, cls.rule, f"Verdict: **{data['verdict']}**", "figure.png"):
        assert text in report
    assert f"attnbench study {name}: {data['verdict']}" in (out / "report.html").read_text()
    assert f"verdict: {data['verdict']}" in done.stdout


def test_the_verdict_is_the_rule_applied_to_the_written_numbers(quick):
    """results.json's rows, given back to the study's rule, give the verdict it recorded:
    the verdict comes from the numbers on disk, not from anything else."""
    name, out, done = quick
    data = json.loads((out / "results.json").read_text())
    rows = [{k: (math.nan if v is None else v) for k, v in r.items()} for r in data["rows"]]
    again = study_class(name)().verdict(Results(rows))
    assert again.verdict == data["verdict"]


def test_training_studies_leave_normal_run_dirs_that_report_reads(quick, tmp_path):
    name, out, done = quick
    if name == "complexity":
        pytest.skip("measures with the benchmark: no training runs")
    summaries = list((out / "runs").rglob("summary.json"))
    assert summaries and all(json.loads(p.read_text())["status"] == "ok" for p in summaries)
    page = tmp_path / "r.html"
    group = "task.name,model.name,posenc.name"
    runs = out / "runs"
    done = cli("report", str(runs), "--group", group, "--html", str(page), env=ENV)
    assert done.returncode == 0, done.stderr
    assert page.is_file() and page.stat().st_size > 0
    data = json.loads((out / "results.json").read_text())
    groups = {json.dumps(r, sort_keys=True) for r in data["rows"] if r["metric"] == "test/acc"}
    table = [ln for ln in done.stdout.splitlines() if ln.startswith("|")][2:]
    assert len(table) == len(groups)


def test_report_renders_a_study_as_it_was_written(quick, tmp_path):
    """`attnbench report STUDY_DIR --html`: the study's claim, table and verdict, its own
    figure; regrouping options point at its runs instead."""
    name, out, done = quick
    data = json.loads((out / "results.json").read_text())
    page = tmp_path / "study.html"
    shown = cli("report", str(out), "--html", str(page), env=ENV)
    assert shown.returncode == 0, shown.stderr
    assert f"Verdict: {data['verdict']}. {data['summary']}" in shown.stdout
    table = [ln for ln in shown.stdout.splitlines() if ln.startswith("|")][2:]
    groups = {(r["sweep"], *(str(r[f]) for f in fields_of(r))) for r in data["rows"]}
    assert len(table) == len(groups)  # one line per sweep and group, metrics side by side
    html = page.read_text()
    assert f"attnbench study {name}: {data['verdict']}" in html
    assert html_escape(study_class(name).claim) in html
    assert data_uri((out / "figure.svg").read_bytes()) in html  # the study's own figure
    refused = cli("report", str(out), "--metric", "val/acc", env=ENV)
    assert refused.returncode == 2 and "--metric does nothing" in refused.stderr
    runs = out / "runs"
    assert (str(runs) if runs.is_dir() else "its run directories are not here") in refused.stderr


# ----------------------------------------------------------------------------- a user's study

TINY = textwrap.dedent("""
    import attnbench
    from attnbench.study import Study, Sweep, Verdict

    @attnbench.register("study", "tiny")
    class Tiny(Study):
        claim = "A learned table of 2 positions cannot encode longer sentences."
        rule = "supported when exactly one job failed"
        quick_seeds = 1

        def sweeps(self, quick):
            base = ["experiment=sentiment_quick", "posenc=learned", "model.d_model=16",
                    "trainer.max_epochs=1", "trainer.limit_train_batches=2",
                    "trainer.limit_val_batches=2", "trainer.limit_test_batches=2"]
            return [Sweep("s", base, {"posenc.max_len": [2, 1024]}, ["posenc.max_len"])]

        def verdict(self, results):
            ok = len(results.failed) == 1
            return Verdict("supported" if ok else "refuted", {"failed": len(results.failed)})
""")


# A Hydra callback that ends the whole multirun process once its first job has ended, as a
# crash of the sweep process (killed, out of memory, a launcher error) would.
STOPPER = textwrap.dedent("""
    import os
    from hydra.experimental.callback import Callback

    class StopTheSweep(Callback):
        def on_job_end(self, config, job_return, **kwargs):
            os._exit(3)

    class KillTheLastJob(Callback):  # killed after Hydra wrote its .hydra/, as by kill -9
        def on_job_start(self, config, **kwargs):
            if config.hydra.job.num == 1:
                os._exit(9)
""")


@pytest.fixture
def tiny(tmp_path):
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "tiny_study.py").write_text(TINY)
    (tmp_path / "stopper.py").write_text(STOPPER)
    env = {**ENV, "ATTNBENCH_PLUGIN_PATH": str(plugins), "PYTHONPATH": str(tmp_path)}
    return lambda *args: cli(
        "study", "tiny", "--quick", "--out", str(tmp_path / "o"), *args, env=env
    )


def test_a_sweep_that_stops_midway_withholds_the_verdict_until_a_rerun(tiny, tmp_path):
    stopped = tiny("+hydra.callbacks.stop._target_=stopper.StopTheSweep")
    assert stopped.returncode == 1
    data = json.loads((tmp_path / "o" / "results.json").read_text())
    assert data["verdict"] == "inconclusive" and data["summary"].startswith("incomplete")
    assert [f["status"] for f in data["failed"]][-1] == "not run"
    assert "1 of its 2 jobs never started" in data["failed"][-1]["reason"]
    finished = tiny()  # the same study again: the job that never ran runs now
    again = json.loads((tmp_path / "o" / "results.json").read_text())
    assert finished.returncode == 1 and again["verdict"] == "supported"  # the rule's own
    assert "not run" not in [f["status"] for f in again["failed"]]


def test_a_job_killed_midway_withholds_the_verdict_until_a_rerun(tiny, tmp_path):
    """Every job started (none "not run"), but the last one died before its summary.json."""
    killed = tiny("+hydra.callbacks.kill._target_=stopper.KillTheLastJob")
    assert killed.returncode == 1
    data = json.loads((tmp_path / "o" / "results.json").read_text())
    assert data["verdict"] == "inconclusive" and data["summary"].startswith("incomplete")
    assert sorted(f["status"] for f in data["failed"]) == ["failed", "missing"]
    tiny()  # the killed job runs now
    again = json.loads((tmp_path / "o" / "results.json").read_text())
    assert again["verdict"] == "supported"
    assert [f["status"] for f in again["failed"]] == ["failed"]


def test_report_reads_a_results_json_that_is_no_study_as_runs(tmp_path):
    """A run directory that happens to hold some other results.json is reported as a run."""
    plugins = {"task": {"name": "pos", "dataset": "ud"}, "model": {"name": "rnn"}}
    summary = {"status": "ok", "metrics": {"test/acc": 0.5}, "seed": 1, "plugins": plugins}
    (tmp_path / "summary.json").write_text(json.dumps(summary))
    for text in ("{not json", json.dumps({"accuracy": 0.9})):
        (tmp_path / "results.json").write_text(text)
        done = cli("report", str(tmp_path), env=ENV)
        assert done.returncode == 0, done.stderr
        assert "0.500" in done.stdout and "Verdict" not in done.stdout


def test_report_refuses_a_broken_study_file_in_one_line(tmp_path):
    for rows in ([{"sweep": "s"}], "oops"):
        broken = {"study": "x", "verdict": "mixed", "rows": rows}
        (tmp_path / "results.json").write_text(json.dumps(broken))
        done = cli("report", str(tmp_path), env=ENV)
        assert done.returncode == 2 and "Traceback" not in done.stderr
        assert "results.json: a row lacks" in done.stderr and "run the study again" in done.stderr


def test_report_warns_when_a_studys_runs_are_newer_than_its_report(tiny, tmp_path):
    tiny()
    out = tmp_path / "o"
    assert "newer than this report" not in cli("report", str(out), env=ENV).stderr
    later = next((out / "runs").rglob("summary.json"))
    os.utime(later, (later.stat().st_atime, later.stat().st_mtime + 60))
    shown = cli("report", str(out), env=ENV)
    assert shown.returncode == 0 and "1 run(s)" in shown.stderr
    assert "newer than this report" in shown.stderr


def test_a_measuring_study_refuses_overrides_and_seeds(tmp_path):
    for extra in (["--seeds", "2"], ["trainer.max_epochs=2"]):
        done = cli("study", "complexity", "--quick", "--out", str(tmp_path), *extra, env=ENV)
        assert done.returncode == 2, done.stderr
        assert "measures instead of training" in done.stderr, done.stderr
        assert " ".join(extra) in done.stderr
    assert not (tmp_path / "results.json").exists()


def test_a_failed_job_never_stops_the_study_and_the_report_lists_it(tiny, tmp_path):
    done = tiny()
    assert done.returncode == 1  # like a sweep with a failed job
    out = tmp_path / "o"
    data = json.loads((out / "results.json").read_text())
    assert data["verdict"] == "supported"
    assert [f["status"] for f in data["failed"]] == ["failed"]
    assert "max_len" in data["failed"][0]["reason"]
    assert [r["posenc.max_len"] for r in data["rows"]] == [1024]  # the other job's number
    report = (out / "report.md").read_text()
    assert "## Jobs that did not finish ok" in report and "max_len" in report


def test_only_this_calls_jobs_count_not_an_earlier_calls_leftovers(tiny, tmp_path):
    """Two seeds first, then one: the second call's table holds one seed (the seed-2 job
    folders of the first call are still there and must not be pooled in)."""
    tiny("--seeds", "2")
    first = json.loads((tmp_path / "o" / "results.json").read_text())
    assert [(r["n"], r["seeds"]) for r in first["rows"]] == [(2, [1, 2])]
    tiny()
    again = json.loads((tmp_path / "o" / "results.json").read_text())
    assert [(r["n"], r["seeds"]) for r in again["rows"]] == [(1, [1])]
    assert len(again["failed"]) == 1  # the max_len=2 job of this call only
    assert 0 < again["run_seconds"] < first["run_seconds"]  # the seed-2 jobs' time left out


def test_a_refused_override_on_a_rerun_stops_the_study(tiny, tmp_path):
    tiny()
    before = (tmp_path / "o" / "results.json").read_text()
    refused = tiny("model=cnnn")
    assert refused.returncode == 2
    assert "did you mean 'cnn'" in refused.stderr
    assert (tmp_path / "o" / "results.json").read_text() == before  # no verdict from old runs


def test_a_rerun_uses_the_same_job_directories(tiny, tmp_path):
    tiny()
    first = sorted(p.relative_to(tmp_path) for p in (tmp_path / "o" / "runs").rglob(".hydra"))
    tiny()
    again = sorted(p.relative_to(tmp_path) for p in (tmp_path / "o" / "runs").rglob(".hydra"))
    assert first == again and len(first) == 2


def test_a_rerun_skips_finished_jobs(tiny, tmp_path):
    tiny()
    ok = next(
        p
        for p in (tmp_path / "o" / "runs").rglob("summary.json")
        if json.loads(p.read_text())["status"] == "ok"
    )
    before = (ok.stat().st_mtime_ns, ok.read_text())
    tiny()
    assert (ok.stat().st_mtime_ns, ok.read_text()) == before


# ----------------------------------------------------------------------------- the rules


def rows(metric: str, sweep: str, field: str, values: dict[str, list[float]]) -> list[dict]:
    """Hand-made result rows: one per group, mean ± std of the given per-seed values."""
    made = []
    for name, seeds in values.items():
        s = stat_of(seeds)
        made.append(
            {"sweep": sweep, field: name, "metric": metric, "mean": s.mean, "std": s.std, "n": s.n}
        )
    return made


def test_beats_needs_the_gap_to_exceed_both_stds():
    assert beats(stat_of([0.9, 0.92]), stat_of([0.8, 0.81]))
    assert not beats(stat_of([0.9, 0.7]), stat_of([0.8, 0.81]))  # gap inside the spread
    assert not beats(stat_of([0.9]), stat_of([]))  # a missing side never wins


def context_results(acc: dict[str, float], ambiguous: dict[str, float]) -> Results:
    spread = [-0.002, 0.0, 0.002]
    made = rows(
        "test/acc", "pos", "model.name", {m: [v + d for d in spread] for m, v in acc.items()}
    )
    made += rows(
        "test/acc_ambiguous",
        "pos",
        "model.name",
        {m: [v + d for d in spread] for m, v in ambiguous.items()},
    )
    return Results(made)


@pytest.mark.parametrize(
    "acc, ambiguous, expected",
    [
        (  # the lecture's ordering, and a wider gap on ambiguous words
            {"mlp": 0.85, "window_mlp": 0.91, "cnn": 0.912, "rnn": 0.94, "transformer": 0.93},
            {"mlp": 0.60, "window_mlp": 0.80, "cnn": 0.80, "rnn": 0.88, "transformer": 0.86},
            "supported",
        ),
        (  # context does not help at all
            {"mlp": 0.93, "window_mlp": 0.93, "cnn": 0.93, "rnn": 0.93, "transformer": 0.93},
            {"mlp": 0.8, "window_mlp": 0.8, "cnn": 0.8, "rnn": 0.8, "transformer": 0.8},
            "refuted",
        ),
        (  # ordering holds but the CNN is far better than the window MLP
            {"mlp": 0.85, "window_mlp": 0.88, "cnn": 0.92, "rnn": 0.94, "transformer": 0.95},
            {"mlp": 0.60, "window_mlp": 0.70, "cnn": 0.80, "rnn": 0.88, "transformer": 0.9},
            "mixed",
        ),
    ],
)
def test_context_rule(acc, ambiguous, expected):
    assert study_class("context")().verdict(context_results(acc, ambiguous)).verdict == expected


def test_context_rule_is_inconclusive_without_a_model():
    acc = {"mlp": 0.85, "window_mlp": 0.9, "cnn": 0.9, "rnn": 0.94}
    found = study_class("context")().verdict(context_results(acc, acc))
    assert found.verdict == "inconclusive" and "transformer" in found.summary


def positions_results(acc: dict[str, dict[str, float]], agree: float) -> Results:
    made = []
    for task, by_enc in acc.items():
        made += rows(
            "test/acc", task, "posenc.name", {e: [v - 0.003, v + 0.003] for e, v in by_enc.items()}
        )
        made += rows("test/perm_agree", task, "posenc.name", {"none": [agree, agree]})
    return Results(made)


ENCS = ("sinusoidal", "learned", "rope", "relative")


@pytest.mark.parametrize(
    "sentiment, pos, agree, expected",
    [
        (0.99, 0.95, 1.0, "supported"),  # every encoding far above none (0.7 / 0.85)
        (0.99, 0.85, 1.0, "mixed"),  # order matters for sentiment only
        (0.70, 0.85, 1.0, "refuted"),  # no encoding helps anywhere
        (0.99, 0.95, 0.90, "refuted"),  # none is not permutation-equivariant
    ],
)
def test_positions_rule(sentiment, pos, agree, expected):
    acc = {
        "sentiment": {"none": 0.70, **dict.fromkeys(ENCS, sentiment)},
        "pos": {"none": 0.85, **dict.fromkeys(ENCS, pos)},
    }
    assert study_class("positions")().verdict(positions_results(acc, agree)).verdict == expected


def test_positions_rule_is_inconclusive_without_an_encoding():
    acc = {
        "sentiment": {"none": 0.70, **dict.fromkeys(ENCS, 0.99)},
        "pos": {"none": 0.85, **dict.fromkeys(ENCS[:-1], 0.95)},  # no relative on POS
    }
    found = study_class("positions")().verdict(positions_results(acc, 1.0))
    assert found.verdict == "inconclusive" and "posenc=relative on pos" in found.summary
    assert found.numbers["pos: rope acc"].startswith("0.95")  # the other numbers still shown
    not_equivariant = study_class("positions")().verdict(positions_results(acc, 0.5))
    assert not_equivariant.verdict == "refuted"  # settled without the missing runs


def complexity_results(slopes: dict[str, tuple[float, float]]) -> Results:
    made = []
    for variant, (time_slope, memory_slope) in slopes.items():
        for metric, value in (("time_ms", time_slope), ("peak_mb", memory_slope)):
            made.append(
                {
                    "sweep": "slope",
                    "variant": variant,
                    "N": ">=1024",
                    "metric": metric,
                    "mean": value,
                    "std": math.nan,
                    "n": 4,
                }
            )
    return Results(made)


DENSE, LINEAR = ("dot", "dense_ref", "additive"), ("truncated", "graph", "linear")


@pytest.mark.parametrize(
    "dense, linear, expected",
    [
        ((1.95, 1.9), (1.05, 1.0), "supported"),
        ((1.95, 1.0), (1.05, 1.0), "mixed"),  # memory does not grow with N² (fused kernels)
        ((1.1, 1.0), (1.05, 1.0), "refuted"),  # nothing quadratic at all
    ],
)
def test_complexity_rule(dense, linear, expected):
    slopes = {**dict.fromkeys(DENSE, dense), **dict.fromkeys(LINEAR, linear)}
    found = study_class("complexity")().verdict(complexity_results(slopes))
    assert found.verdict == expected
    assert found.numbers["dot time_ms slope"] == dense[0]


def test_complexity_slope_is_the_log_log_exponent():
    fit = sys.modules[study_class("complexity").__module__].slope
    assert fit([(n, 3.0 * n**2) for n in (256, 512, 1024)]) == pytest.approx(2.0)
    assert fit([(n, 5.0 * n) for n in (256, 1024)]) == pytest.approx(1.0)
    assert math.isnan(fit([(256, 1.0)]))


def test_a_verdict_must_be_one_of_the_four():
    with pytest.raises(ValueError, match="supported"):
        Verdict("probably", {})


def test_list_shows_studies_with_their_claim():
    listed = cli("list", "study")
    assert listed.returncode == 0, listed.stderr
    rows = {line.split()[1]: line for line in listed.stdout.splitlines() if line.strip()}
    assert "positions" in rows and "permutation-equivariant" in rows["positions"]
    assert all(line.split()[0] == "study" for line in rows.values())


def test_run_seconds_count_the_calls_a_resumed_job_took(tmp_path):
    """A resumed job's earlier calls count (earlier_wall_seconds); a summary written before
    that was recorded falls back to its training time, which survives resumes."""
    from attnbench.study.run import run_seconds

    jobs = {"resumed": (10.0, 5.0, 12.0), "legacy": (3.0, None, 20.0), "plain": (7.0, 0.0, 6.0)}
    for name, (wall, earlier, train) in jobs.items():
        (tmp_path / name).mkdir()
        summary = {"wall_seconds": wall, "train_seconds": train}
        if earlier is not None:
            summary["earlier_wall_seconds"] = earlier
        (tmp_path / name / "summary.json").write_text(json.dumps(summary))
    assert run_seconds({tmp_path / name for name in jobs}) == 15.0 + 20.0 + 7.0
