"""Every README example runs: the custom plugin verbatim, every `attnbench` command line."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess

import pytest
from conftest import ATTNBENCH, REPO, SHARED_DATA

README = (REPO / "README.md").read_text()
QUICK = [
    "trainer.limit_train_batches=2",
    "trainer.limit_val_batches=1",
    "trainer.limit_test_batches=1",
]


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README, flags=re.S)


def _after(marker: str) -> str:
    return re.search(rf"<!-- {marker} -->\n```\w+\n(.*?)```", README, flags=re.S).group(1)


def _example_files() -> dict[str, str]:
    return dict(re.findall(r"<!-- example: (\S+) -->\n```python\n(.*?)```", README, flags=re.S))


def _command_lines() -> list[str]:
    skip = {_after("quickstart")}
    lines = []
    for block in _blocks("bash"):
        if block in skip or "pip install" in block:
            continue
        lines += [ln for ln in block.splitlines() if re.match(r"^(\w+=\S+ )*attnbench ", ln)]
    return lines


# What a fresh clone holds at its root: the commands run where a user stands after the quick
# start, so the source tree's attnbench/ sits beside them (and must not shadow the install).
def _clone_entries() -> list[str]:
    tracked = subprocess.run(
        ["git", "-C", str(REPO), "ls-tree", "--name-only", "HEAD"], capture_output=True, text=True
    )
    if tracked.returncode == 0 and tracked.stdout.strip():
        return tracked.stdout.split()
    return [p.name for p in REPO.iterdir() if p.name not in (".venv", "outputs", "build")]


WRITTEN_BY_EXAMPLES = {"docs"}


@pytest.fixture
def clone_root(tmp_path):
    """A stand-in for the clone's root: the tracked top-level entries, linked, beside an empty
    outputs/, so the examples' ./outputs never mixes with the real clone's. docs/ is copied:
    examples write their pictures there (`maps ... --out docs/maps/pos`)."""
    root = tmp_path / "clone"
    root.mkdir()
    for name in _clone_entries():
        if name in WRITTEN_BY_EXAMPLES and (REPO / name).is_dir():
            shutil.copytree(REPO / name, root / name)
        elif (REPO / name).exists():
            (root / name).symlink_to(REPO / name)
    return root


def _run(line: str, cwd, extra: list[str] = ()) -> subprocess.CompletedProcess:
    words = shlex.split(line, comments=True)
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "COLUMNS": "200"}
    env.pop("ATTNBENCH_OUTPUT", None)  # the examples write to ./outputs, as a user's would
    while "=" in words[0]:
        key, value = words.pop(0).split("=", 1)
        if value == "/path/to/data":
            value = str(SHARED_DATA)
        env[key] = value
    assert words[0] == "attnbench"
    cmd = [*ATTNBENCH, *words[1:], *extra]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)


# A number the README quotes, with the command that produces it and the tolerance stated:
# <!-- result: attnbench ... => metric value ± tolerance --> right below the text quoting it.
# `<!-- slow result: ... -->` marks the reference runs on real data (minutes each): they run
# with `pytest -m slow`, skipped without the data sets.
RESULT = re.compile(r"<!-- (slow )?result: (.+?) => (\S+) ([\d.]+) ± ([\d.]+) -->")


def _quoted_results() -> list:
    return [
        pytest.param(line, metric, value, tol, marks=[pytest.mark.slow] if slow else [])
        for slow, line, metric, value, tol in RESULT.findall(README)
    ]


@pytest.mark.parametrize(("line", "metric", "value", "tolerance"), _quoted_results())
def test_readme_numbers_are_what_the_commands_print(line, metric, value, tolerance, clone_root):
    """Runs the command as the README gives it (no shortened epochs) and compares."""
    if "ATTNBENCH_DATA=/path/to/data" in line and not SHARED_DATA.is_dir():
        pytest.skip("needs the real data sets (../shared/data)")
    at = re.search(rf"<!-- (slow )?result: {re.escape(line)} =>", README).start()
    assert value in README[max(0, at - 1500) : at], f"the text above does not quote {value}"
    result = _run(f"{line} hydra.run.dir=run", clone_root)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((clone_root / "run" / "summary.json").read_text())
    assert summary["metrics"][metric] == pytest.approx(float(value), abs=float(tolerance))


def test_quickstart_is_two_commands():
    commands = [ln for ln in _after("quickstart").splitlines() if ln.strip()]
    assert len(commands) == 2
    assert "attnbench" in commands[0] and "pytest" in commands[1]


def test_custom_plugin_example_verbatim(clone_root):
    files = _example_files()
    assert files, "README lost its plugin example"
    for name, text in files.items():
        assert len(text.strip().splitlines()) <= 30, f"{name} must stay within 30 lines"
        (clone_root / name).parent.mkdir(parents=True, exist_ok=True)
        (clone_root / name).write_text(text)
    check, train = [ln for ln in _after("example-command").splitlines() if ln.strip()]
    checked = _run(check, clone_root)  # the example passes the attention contract
    assert checked.returncode == 0, checked.stdout + checked.stderr[-3000:]
    assert "FAIL" not in checked.stdout and checked.stdout.count("PASS") >= 8, checked.stdout
    result = _run(train, clone_root)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "result: val/acc=" in result.stdout
    [summary] = clone_root.glob("outputs/*/*/summary.json")
    assert '"name": "cosine"' in summary.read_text() and '"temperature": 5' in summary.read_text()


@pytest.mark.parametrize("line", _command_lines())
def test_readme_command_runs(line, clone_root):
    if "ATTNBENCH_DATA=/path/to/data" in line and not SHARED_DATA.is_dir():
        pytest.skip("needs the real data sets")
    for name, text in _example_files().items():
        (clone_root / name).parent.mkdir(parents=True, exist_ok=True)
        (clone_root / name).write_text(text)
    words = shlex.split(line, comments=True)
    trains = not any(
        w in ("list", "check", "bench", "report", "plot", "maps", "study", "--help", "--cfg")
        for w in words
    )
    if "bench" in words:
        pytest.skip("benchmarks run on demand")
    if "report" in words:  # give it runs to read where the line looks for them
        runs = words[words.index("report") + 1]
        sweep = _run(f"attnbench -m seed=1,2 hydra.sweep.dir={runs}", clone_root, QUICK)
        assert sweep.returncode == 0, sweep.stderr[-3000:]
    for verb in ("maps", "plot"):  # a finished run where the line looks for it
        if verb in words:
            run_dir = words[words.index(verb) + 1]
            made = _run(f"attnbench hydra.run.dir={run_dir}", clone_root, QUICK)
            assert made.returncode == 0, made.stderr[-3000:]
    if "hparams_search=" in line:  # a search: two trials here, not the README's twenty
        line = re.sub(r"hydra\.sweeper\.n_trials=\d+", "hydra.sweeper.n_trials=2", line)
    if "--config-name" in words:  # the best trial's rerun: a finished search where it looks
        search = words[words.index("--config-dir") + 1]
        found = _run(
            f"attnbench hparams_search=window experiment=sentiment_quick "
            f"hydra.sweeper.n_trials=2 hydra.sweep.dir={search}",
            clone_root,
            QUICK,
        )
        assert found.returncode == 0, found.stderr[-3000:]
    if "ckpt_path=outputs/first/checkpoints/last.ckpt" in line:  # the resume example
        stopped = line.replace(" ckpt_path=outputs/first/checkpoints/last.ckpt", "")
        first = _run(stopped, clone_root, [*QUICK, "trainer.max_epochs=1"])  # stopped early
        assert first.returncode == 0, first.stderr[-3000:]
    quick = [*QUICK, *(["trainer.max_epochs=1"] if "-m" in words else [])] if trains else []
    given = {w.split("=", 1)[0] for w in words if "=" in w}
    extra = [o for o in quick if o.split("=", 1)[0] not in given]  # the line's own settings win
    result = _run(line, clone_root, extra)  # sweeps: every job one short epoch
    expect_fail = "dto" in line or "dropuot" in line
    if expect_fail:
        assert result.returncode == 2 and "Traceback" not in result.stderr
        return
    assert result.returncode == 0, result.stderr[-3000:]
    if trains and "submitit" in line:  # submitit's jobs print into their own log files
        done = [json.loads(f.read_text()) for f in clone_root.glob("multirun/**/summary.json")]
        assert len(done) == 2 and all(d["status"] == "ok" for d in done), done
    elif trains:
        assert "result: " in result.stdout
    if "report" in words:
        assert result.stdout.startswith("| ") and "±" in result.stdout  # a table, 2 seeds pooled


def _shown_errors() -> list[tuple[str, str]]:
    pairs = []
    for block in _blocks("text"):
        lines = block.splitlines()
        pairs += [
            (ln[2:], lines[i + 1])
            for i, ln in enumerate(lines[:-1])
            if ln.startswith("$ attnbench")
        ]
    return pairs


@pytest.mark.parametrize(("line", "shown"), _shown_errors())
def test_readme_shows_the_real_error(line, shown, clone_root):
    result = _run(line, clone_root)
    assert result.returncode == 2
    assert result.stderr.strip().startswith(shown.split("...")[0].rstrip())
