"""Bad input through the command line: every case must stop before training with exit
status 2 and one line ``attnbench: error: ...`` that names the problem and the fix, with no
traceback, nothing written in the data directory, and nothing in the run directory beyond
what a failed run documents (``.hydra/`` and a ``summary.json`` whose status is "failed").

Hydra also creates its job log (``attnbench.log``) when a job starts; it is tolerated while
it holds no more than INFO records (normally it is empty). Anything else is not.

The matrix runs in-process (``attnbench.cli.main``, about 0.2 s a case instead of 3-5 s for
a fresh interpreter); plugin loading depends on the environment at discovery, so those cases
start the real console script, as do two cases that check the in-process runs show what a
user would see. Runs use one-batch limits rather than ``trainer.fast_dev_run``: fast_dev_run
turns checkpoints and loggers off, which would hide files written by a run that got too far.

Cases marked xfail would be known gaps, each with where the fix belongs (strict: a fix makes the
test pass, and then the mark must go).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import pickle
import re
import sys
import textwrap
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from conftest import cli

from attnbench.cli import main

ERROR = "attnbench: error: "
# A small model and one batch of each stage: a case that slips through trains in a blink
# and leaves checkpoints/ and csv/ behind for the leftover check to find.
COMMON = (
    "model.d_model=16",
    "model.layers=1",
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=1",
    "trainer.limit_val_batches=1",
    "trainer.limit_test_batches=1",
    "+trainer.limit_predict_batches=1",
)


# ----------------------------------------------------------------------------- files


class Crafted:
    """Unpickling this runs code: it would create the file ``marker``."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def marker(tmp: Path) -> Path:
    return tmp / "code-ran"


def write_ckpt(content: bytes | None) -> Callable[[Path], None]:
    def prepare(tmp: Path) -> None:
        if content is not None:
            (tmp / "bad.ckpt").write_bytes(content)

    return prepare


def truncated_ckpt(tmp: Path) -> None:
    torch.save({"state_dict": {"w": torch.zeros(4096)}, "epoch": 0}, tmp / "bad.ckpt")
    data = (tmp / "bad.ckpt").read_bytes()
    (tmp / "bad.ckpt").write_bytes(data[: len(data) // 2])


def pickle_ckpt(tmp: Path) -> None:
    (tmp / "bad.ckpt").write_bytes(pickle.dumps({"state_dict": Crafted(marker(tmp))}))


def torch_pickle_ckpt(tmp: Path) -> None:
    torch.save({"state_dict": {}, "hook": Crafted(marker(tmp))}, tmp / "bad.ckpt")


def no_state_dict_ckpt(tmp: Path) -> None:
    torch.save({"epoch": 3, "weights": torch.zeros(2)}, tmp / "bad.ckpt")


GOOD_SST2 = "sentence\tlabel\na fine film\t1\na dull film\t0\nsharp and funny\t1\n"


def sst2(files: dict[str, str | bytes | None]) -> Callable[[Path], None]:
    """<tmp>/data/sentiment/ with valid train/dev/test TSVs, some replaced: a str or bytes
    is the file's content (``train.tsv.gz`` replaces ``train.tsv``), None a directory."""

    def prepare(tmp: Path) -> None:
        folder = tmp / "data" / "sentiment"
        folder.mkdir(parents=True)
        for stem in ("train", "dev", "test"):
            (folder / f"{stem}.tsv").write_text(GOOD_SST2)
        for name, content in files.items():
            (folder / f"{name.split('.')[0]}.tsv").unlink()
            if content is None:
                (folder / name).mkdir()
            else:
                data = content if isinstance(content, bytes) else content.encode()
                (folder / name).write_bytes(data)

    return prepare


def truncated_gzip(text: str) -> bytes:
    data = gzip.compress(text.encode() * 200)
    return data[: len(data) // 2]


# ----------------------------------------------------------------------------- the matrix


@dataclass(frozen=True)
class Case:
    args: tuple[str, ...]  # "{tmp}" stands for the test's temporary directory
    words: tuple[str, ...]  # each must appear in the error line ("{tmp}" as above)
    prepare: Callable[[Path], None] | None = None


def case(id: str, args: str, *words: str, prepare=None, gap: str | None = None, marks=()):
    """One bad input. ``gap``: the known shortcoming that makes it fail today, and where
    the fix belongs."""
    marks = [*marks, *([pytest.mark.xfail(strict=True, reason=gap)] if gap else [])]
    return pytest.param(Case(tuple(args.split()), words, prepare), id=id, marks=marks)


NO_GPU = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")

CASES = [
    # --- misspelled plugin names, one per kind, and in a sweep list
    case("attention name", "attention=dto", "unknown attention 'dto'", "did you mean 'dot'"),
    case("posenc name", "posenc=sinusodal", "unknown posenc", "did you mean 'sinusoidal'"),
    case("model name", "model=transfomer", "unknown model", "did you mean 'transformer'"),
    case("task name", "task=sentimnet", "unknown task", "did you mean 'sentiment'"),
    case("sweep list name", "-m attention=dot,dto hydra.sweep.dir={tmp}/sweep", "'dto'", "'dot'"),
    # --- plugin parameters: names, types, ranges, choices, cross-checks
    case("param name", "attention.dropuot=0.1", "no parameter 'dropuot'", "did you mean 'dropout'"),
    case("param added", "+task.foo=1", "task 'sentiment' has no parameter 'foo'", "batch_size"),
    case("heads 0", "model.heads=0", "model.heads=0", ">= 1"),
    case("d_model 0", "model.d_model=0", "model.d_model=0", ">= 1"),
    case("d_model abc", "model.d_model=abc", "model.d_model='abc'", "wrong type"),
    case("layers 0", "model.layers=0", "model.layers=0", ">= 1"),
    case("layers -1", "model.layers=-1", "model.layers=-1", ">= 1"),
    case("layers 1.5", "model.layers=1.5", "model.layers=1.5", "wrong type"),
    case("ff_mult 0", "model.ff_mult=0", "model.ff_mult=0", ">= 1"),
    case("dropout -0.1", "model.dropout=-0.1", "model.dropout=-0.1", "[0, 1)"),
    case("dropout 1.0", "model.dropout=1.0", "model.dropout=1.0", "[0, 1)"),
    case("dropout abc", "attention.dropout=abc", "attention.dropout='abc'", "[0, 1)"),
    case("window -1", "attention=truncated attention.window=-1", "attention.window=-1", ">= 0"),
    case("batch_size 0", "task.batch_size=0", "task.batch_size=0", ">= 1"),
    case("batch_size -3", "task.batch_size=-3", "task.batch_size=-3", ">= 1"),
    case("max_len 0", "posenc=learned posenc.max_len=0", "posenc.max_len=0", ">= 1"),
    case("norm mid", "model.norm=mid", "model.norm='mid'", "'pre'", "'post'"),
    case("cell rnn", "model=rnn model.cell=rnn", "model.cell='rnn'", "'lstm'", "'gru'"),
    case("score cosine", "attention=multihead attention.score=cosine", "'cosine'", "'additive'"),
    case("hidden 0", "attention=multihead attention.hidden=0", "attention.hidden=0", ">= 1"),
    case("rope base 0", "posenc=rope posenc.base=0", "posenc.base=0", "> 1"),
    case("heads 5", "model.heads=5", "d_model=16", "heads=5", "divide"),
    case("dataset sst3", "task.dataset=sst3", "task.dataset='sst3'", "sst2"),
    case("beam 0", "task=translation task.beam_size=0", "task.beam_size", ">= 1"),
    case("patch 3", "task=image task.patch=3", "task.patch=3", "divisor of 8"),
    case(
        "sinusoidal max_len short",
        "posenc=sinusoidal posenc.max_len=8",
        "posenc.max_len=8",
    ),
    # --- harness settings
    case("lr -1", "optim.lr=-1", "optim.lr=-1", "> 0"),
    case("lr abc", "optim.lr=abc", "optim.lr='abc'", "> 0"),
    case("lr 0", "optim.lr=0", "optim.lr=0", "> 0"),
    case("weight_decay", "optim.weight_decay=-0.1", "optim.weight_decay=-0.1", ">= 0"),
    case("scheduler", "optim.scheduler=linear", "optim.scheduler='linear'", "cosine"),
    case("warmup", "optim.warmup_steps=-1", "optim.warmup_steps=-1", ">= 0"),
    case("optim=5", "optim=5", "optim=5", "optim.x="),
    case("seed abc", "seed=abc", "seed='abc'", "integer in [0, 4294967295]"),
    case("seed -1", "seed=-1", "seed=-1", "integer in [0, 4294967295]"),
    case("max_epochs abc", "trainer.max_epochs=abc", "trainer.max_epochs='abc'", "integer"),
    case("max_epochs 0", "trainer.max_epochs=0", "trainer.max_epochs=0", ">= 1"),
    case("limit 2.5", "trainer.limit_train_batches=2.5", "limit_train_batches=2.5", "[0, 1]"),
    case("accelerator", "trainer.accelerator=tpuu", "trainer.accelerator='tpuu'", "cpu"),
    case("precision 17", "trainer.precision=17", "trainer.precision=17", "bf16-mixed"),
    case("devices 0", "trainer.devices=0", "trainer.devices=0", ">= 1"),
    case("strategy", "trainer.strategy=dpp", "trainer.strategy='dpp'", "did you mean 'ddp'"),
    case("deterministic", "trainer.deterministic=maybe", "'maybe'", "true, false, warn"),
    case("summary flag", "trainer.enable_model_summary=maybe", "enable_model_summary", "true"),
    case("no gpu here", "trainer=gpu", "no GPU", "trainer=cpu", marks=[NO_GPU]),
    case("metric", "optimized_metric=val/bleu", "'val/bleu'", "val/acc"),
    case("callback target", "+callbacks.x._target_=nowhere.X", "'nowhere.X'", "cannot be imported"),
    case("callback value", "+callbacks.x=1", "callbacks.x=1", "_target_"),
    # --- unknown keys, groups and presets (Hydra's refusals as one line with a suggestion)
    case("group +attentoin", "+attentoin=dot", "'attentoin'", "did you mean 'attention'"),
    case("key optim.lrr", "optim.lrr=1", "'optim.lrr'", "did you mean 'optim.lr'"),
    case("key max_epoch", "trainer.max_epoch=3", "'trainer.max_epoch'", "'trainer.max_epochs'"),
    case("key +trainer.foo", "+trainer.foo=1", "'trainer.foo'", "max_epochs"),
    case("preset experiment", "experiment=sentimnt_quick", "did you mean 'sentiment_quick'"),
    case("preset logger", "logger=wandbb", "unknown logger preset", "did you mean 'wandb'"),
    case("preset trainer", "trainer=gpuu", "unknown trainer preset", "did you mean 'gpu'"),
    case("~attention", "seed=1 ~attention", "no attention", "attention=<name>", "dot"),
    case(
        "~attention first",
        "~attention",
        "no attention",
        "attention=<name>",
    ),
    case(
        "attention=null",
        "attention=null",
        "attention",
        "choose one of: additive",
    ),
    case(
        "logger=null",
        "logger=null",
        "logger=none",
    ),
    case(
        "attention= empty",
        "attention=",
        "choose one of: additive",
    ),
    case(
        "override syntax",
        "model.heads=[1",
        "model.heads=[1",
    ),
    # --- capability refusals (before training)
    case("graph on sentiment", "attention=graph", "'graph'", "graph edges", "graph"),
    case("graph on pos", "task=pos attention=graph", "'graph'", "graph edges"),
    case("rope with linear", "posenc=rope attention=linear", "'linear'", "relative"),
    case("truncated cross", "task=translation attention=truncated", "'truncated'", "cross"),
    case("cnn seq2seq", "task=translation model=cnn", "'cnn'", "sequence-to-sequence", "rnn"),
    case("rnn on graph", "task=graph model=rnn", "'rnn'", "graph task", "transformer"),
    # --- checkpoints: refused before data loads, naming the file
    case("ckpt missing", "ckpt_path={tmp}/bad.ckpt", "{tmp}/bad.ckpt", "no such file"),
    case("ckpt directory", "ckpt_path={tmp}", "ckpt_path={tmp}:", "checkpoints/last.ckpt"),
    case(
        "ckpt empty", "ckpt_path={tmp}/bad.ckpt", "{tmp}/bad.ckpt", "empty", prepare=write_ckpt(b"")
    ),
    case(
        "ckpt random bytes",
        "ckpt_path={tmp}/bad.ckpt",
        "{tmp}/bad.ckpt",
        "not a loadable checkpoint",
        prepare=write_ckpt(bytes(range(256)) * 16),
    ),
    case(
        "ckpt truncated",
        "ckpt_path={tmp}/bad.ckpt",
        "{tmp}/bad.ckpt",
        "not a loadable checkpoint",
        prepare=truncated_ckpt,
    ),
    case(
        "ckpt crafted pickle",
        "ckpt_path={tmp}/bad.ckpt",
        "{tmp}/bad.ckpt",
        "not a loadable checkpoint",
        prepare=pickle_ckpt,
    ),
    case(
        "ckpt crafted torch.save",
        "ckpt_path={tmp}/bad.ckpt",
        "{tmp}/bad.ckpt",
        "not a loadable checkpoint",
        prepare=torch_pickle_ckpt,
    ),
    case(
        "ckpt no state_dict",
        "ckpt_path={tmp}/bad.ckpt",
        "{tmp}/bad.ckpt",
        "state_dict",
        prepare=no_state_dict_ckpt,
    ),
    case("ckpt url", "ckpt_path=http://127.0.0.1:9/last.ckpt", "http://127.0.0.1:9", "local"),
    # --- data (the readers' own matrix is tests/test_data_errors.py; these go through the CLI)
    case(
        "sst2 missing",
        "task.dataset=sst2",
        "{tmp}/data/sentiment/train.tsv",
        "attnbench download sst2",
    ),
    case(
        "sst2 bad label",
        "task.dataset=sst2",
        "{tmp}/data/sentiment/train.tsv:3:",
        "label '7'",
        prepare=sst2({"train.tsv": "sentence\tlabel\ngood\t1\nbad\t7\n"}),
    ),
    case(
        "sst2 truncated gz",
        "task.dataset=sst2",
        "{tmp}/data/sentiment/train.tsv.gz",
        prepare=sst2({"train.tsv.gz": truncated_gzip(GOOD_SST2)}),
    ),
    case(
        "sst2 empty dev",
        "task.dataset=sst2",
        "{tmp}/data/sentiment/dev.tsv",
        "empty",
        prepare=sst2({"dev.tsv": ""}),
    ),
    case(
        "sst2 header",
        "task.dataset=sst2",
        "{tmp}/data/sentiment/dev.tsv:1:",
        "label",
        prepare=sst2({"dev.tsv": "text\tscore\nfine\t1\n"}),
    ),
    case(
        "sst2 directory",
        "task.dataset=sst2",
        "{tmp}/data/sentiment/test.tsv",
        "directory",
        prepare=sst2({"test.tsv": None}),
    ),
    # --- verbs
    case("unknown verb", "lsit", "'lsit'", "did you mean 'list'"),
    case("bare key", "model.heads", "'model.heads'", "key=value"),
]


@dataclass
class Outcome:
    code: int | str | None
    out: str
    err: str
    fitted: bool


def run_in_process(argv: list[str], capfd, monkeypatch) -> Outcome:
    """``attnbench ARGV`` in this interpreter; Trainer.fit is watched (reaching it means
    work started)."""
    monkeypatch.setattr(sys, "argv", ["attnbench"])
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)  # the CLI sets it for itself
    fitted = []
    real_fit = pl.Trainer.fit

    def watched_fit(self, *args, **kwargs):
        fitted.append(True)
        return real_fit(self, *args, **kwargs)

    monkeypatch.setattr(pl.Trainer, "fit", watched_fit)
    # Hydra points the root logger at the job's directory: undone for the tests that follow
    monkeypatch.setattr(logging.root, "handlers", list(logging.root.handlers))
    monkeypatch.setattr(logging.root, "level", logging.root.level)
    capfd.readouterr()
    try:
        main(argv)
        code = 0
    except SystemExit as e:
        code = e.code
    except Exception:  # what a user would see as a traceback
        code = "exception"
        sys.stderr.write(traceback.format_exc())
    out, err = capfd.readouterr()
    return Outcome(code, out, err, bool(fitted))


def snapshot(folder: Path) -> dict[str, str]:
    """Every file and folder under ``folder`` (hidden ones included) with its content hash."""
    if not folder.exists():
        return {}
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        if p.is_file()
        else "dir"
        for p in sorted(folder.rglob("*"))
    }


# Hydra's format for a log record; INFO records are tolerated on stdout (a fresh machine's
# first import of matplotlib, pulled in by torchmetrics, logs "generated new fontManager")
_INFO_RECORD = re.compile(r"^\[[^]]+\]\[[\w.]+\]\[INFO\] - ")


def not_info(stdout: str) -> list[str]:
    """The stdout lines that are not INFO log records: a refused run prints nothing else."""
    return [line for line in stdout.splitlines() if not _INFO_RECORD.match(line)]


def leftovers(run_dir: Path, message: str) -> list[str]:
    """What the run directory holds beyond a failed run's record."""
    if not run_dir.exists():
        return []
    extra = []
    for path in sorted(run_dir.iterdir()):
        if path.name == ".hydra":
            continue
        if path.name == "attnbench.log" and not_info(path.read_text()) == []:
            continue  # Hydra's job log, created when the job starts; INFO records at most
        if path.name == "summary.json":
            summary = json.loads(path.read_text())
            if summary.get("status") == "failed" and summary.get("reason") == message:
                continue
            extra.append(f"summary.json with status {summary.get('status')!r}")
            continue
        extra.append(path.name)
    return extra


def assert_one_line_refusal(outcome: Outcome, words: list[str]) -> str:
    """Exit 2, exactly one stderr line, ours, holding every key word; returns the message."""
    shown = f"exit {outcome.code}\n--- stderr\n{outcome.err}--- stdout\n{outcome.out}"
    assert "Traceback" not in outcome.err + outcome.out, shown
    assert outcome.code == 2, shown
    lines = outcome.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith(ERROR), shown
    missing = [w for w in words if w not in lines[0]]
    assert not missing, f"{missing} not in: {lines[0]}"
    return lines[0].removeprefix(ERROR)


@pytest.mark.parametrize("bad", CASES)
def test_bad_input_is_one_line_exit_2_and_leaves_nothing(bad: Case, tmp_path, capfd, monkeypatch):
    if bad.prepare is not None:
        bad.prepare(tmp_path)
    data_dir, run_dir = tmp_path / "data", tmp_path / "run"
    data_before = snapshot(data_dir)
    args = [a.replace("{tmp}", str(tmp_path)) for a in bad.args]
    keys = {a.partition("=")[0].lstrip("+~") for a in args}
    # the case first (a verb must lead), then what it does not set itself
    argv = [
        *args,
        *(c for c in COMMON if c.partition("=")[0].lstrip("+") not in keys),
        f"data_dir={data_dir}",
        f"hydra.run.dir={run_dir}",
    ]
    outcome = run_in_process(argv, capfd, monkeypatch)

    message = assert_one_line_refusal(
        outcome, [w.replace("{tmp}", str(tmp_path)) for w in bad.words]
    )
    assert not_info(outcome.out) == [], outcome.out
    assert not outcome.fitted, "training started before the refusal"
    assert leftovers(run_dir, message) == []
    assert snapshot(data_dir) == data_before
    assert not marker(tmp_path).exists(), "a checkpoint ran code"


# ----------------------------------------------------------------------------- subprocess


# The in-process runs above must show what a user sees: the same cases through the real
# console script, with Python's warnings on (the cli() helper turns them off).
@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["model.heads=0"], ["model.heads=0", ">= 1"]),
        (["trainer.max_epoch=3"], ["'trainer.max_epoch'", "'trainer.max_epochs'"]),
    ],
    ids=["plugin parameter", "hydra refusal"],
)
def test_a_fresh_process_shows_the_same_one_line(args, words, tmp_path):
    run_dir = tmp_path / "run"
    result = cli(*args, *COMMON, f"hydra.run.dir={run_dir}", env={"PYTHONWARNINGS": "default"})
    outcome = Outcome(result.returncode, result.stdout, result.stderr, fitted=False)
    message = assert_one_line_refusal(outcome, words)
    assert not_info(result.stdout) == [], result.stdout
    assert leftovers(run_dir, message) == []


PLUGIN_ATTENTION = textwrap.dedent("""
    import attnbench
    from attnbench.nn.attention import Attention

    @attnbench.register("attention", "{name}")
    class Custom(Attention):
        def __init__(self, d_model, heads):
            super().__init__(d_model, heads)

        def forward(self, query, key, value, *, ctx=None, need_weights=False):
            return value, None
""")

PLUGIN_FILES = {
    "raising.py": "raise RuntimeError('boom at import')\n",
    "exiting.py": "import sys\nsys.exit('leaving at import')\n",
    "parsing.py": (
        "import argparse\nparser = argparse.ArgumentParser()\n"
        "parser.add_argument('--lr', type=float)\nparser.parse_args()\n"
    ),
    "chatty.py": "print('hello from chatty at import')\n" + PLUGIN_ATTENTION.format(name="chatty"),
    "plainclass.py": (
        "import attnbench\n\n@attnbench.register('attention', 'plainclass')\n"
        "class PlainClass:\n    def __init__(self, d_model, heads):\n        pass\n"
    ),
    "dup.py": PLUGIN_ATTENTION.format(name="dot"),
    # valid plugins that must never load: a hidden folder and a private one
    ".hidden/sneaky.py": PLUGIN_ATTENTION.format(name="sneaky"),
    "_drafts/draft.py": PLUGIN_ATTENTION.format(name="draft"),
}


@pytest.fixture(scope="module")
def plugin_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("plugins")
    for name, text in PLUGIN_FILES.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def without_plugin_noise(stderr: str) -> list[str]:
    """stderr less the broken or refused plugins' warnings (Python's format: the message, then the
    plugin's source line) and what the chatty plugin printed at import."""
    lines = stderr.splitlines()
    rest, skip = [], False
    for line in lines:
        if skip and line.startswith(" "):
            skip = False
            continue
        skip = "UserWarning: attnbench: plugin " in line  # failed to import, or refused
        if not skip and line != "hello from chatty at import":
            rest.append(line)
    return rest


PLUGIN_CASES = [
    pytest.param(
        "attention=raising",
        ["unknown attention 'raising'", "raising.py", "boom at import"],
        id="raises",
    ),
    pytest.param("attention=exiting", ["exiting.py", "SystemExit: leaving at import"], id="exits"),
    pytest.param(
        "attention=parsing",
        ["parsing.py", "SystemExit: 2", "unrecognized arguments: attention=parsing"],
        id="parses argv",
    ),
    pytest.param("attention=chatty", ["'chatty'", "supports_padding"], id="prints"),
    pytest.param(
        "attention=plainclass",
        ["plainclass.py", "PlainClass", "does not subclass attnbench.Attention"],
        id="not a subclass",
    ),
    pytest.param("attention=dot", ["duplicate attention 'dot'", "rename one"], id="duplicate"),
    pytest.param("attention=sneaky", ["unknown attention 'sneaky'"], id="hidden folder"),
    pytest.param("attention=draft", ["unknown attention 'draft'"], id="private folder"),
]


@pytest.mark.parametrize(("arg", "words"), PLUGIN_CASES)
def test_plugin_on_the_path_is_one_line(arg, words, plugin_dir, tmp_path):
    run_dir = tmp_path / "run"
    env = {"ATTNBENCH_PLUGIN_PATH": str(plugin_dir), "PYTHONWARNINGS": "default"}
    result = cli(arg, *COMMON, f"hydra.run.dir={run_dir}", env=env)
    rest = without_plugin_noise(result.stderr)
    outcome = Outcome(result.returncode, result.stdout, "\n".join(rest) + "\n", fitted=False)
    message = assert_one_line_refusal(outcome, words)
    assert not_info(result.stdout) == [], result.stdout
    assert "sneaky.py" not in result.stderr and "draft.py" not in result.stderr
    assert leftovers(run_dir, message) == []


@pytest.mark.parametrize("verb", [["list"], ["--help"]], ids=["list", "help"])
def test_broken_plugins_do_not_break_list_or_help(verb, plugin_dir):
    env = {"ATTNBENCH_PLUGIN_PATH": str(plugin_dir), "PYTHONWARNINGS": "default"}
    result = cli(*verb, env={**env, "COLUMNS": "400"})
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert "hello from chatty" not in result.stdout  # a plugin's print is not our output
    assert not re.search(r"^attnbench: error:", result.stderr, re.M), result.stderr
    if verb == ["list"]:
        kinds = {line.split()[0] for line in result.stdout.splitlines()}
        assert kinds == {"attention", "posenc", "model", "task", "study", "broken"}, result.stdout
        broken = {
            Path(line.split()[1]).name: line
            for line in result.stdout.splitlines()
            if line.startswith("broken")
        }
        assert set(broken) == {"raising.py", "exiting.py", "parsing.py", "plainclass.py", "dup.py"}
        assert "unrecognized arguments" in broken["parsing.py"]
        assert any(
            line.split()[:2] == ["attention", "chatty"] for line in result.stdout.splitlines()
        )
    else:
        [attention] = [ln for ln in result.stdout.splitlines() if ln.startswith("attention: ")]
        assert "chatty" in attention and "dot" in attention and "sneaky" not in attention


def test_the_crafted_checkpoints_would_run_code(tmp_path):
    """The matrix's crafted checkpoints are real exploits: an unsafe load runs their code."""
    unsafe_loads = {
        pickle_ckpt: lambda path: pickle.loads(path.read_bytes()),
        torch_pickle_ckpt: lambda path: torch.load(path, weights_only=False),
    }
    for prepare, load in unsafe_loads.items():
        prepare(tmp_path)
        load(tmp_path / "bad.ckpt")
        assert marker(tmp_path).exists()
        marker(tmp_path).unlink()


def test_the_matrix_is_large_enough():
    assert len(CASES) + len(PLUGIN_CASES) + 2 >= 60
