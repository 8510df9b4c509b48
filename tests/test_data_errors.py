"""Bad data files: every reader, every kind of corruption, one line naming file(:line).

Each case builds a tiny, valid data directory for one task, breaks one file, and sets the
task up as a run would. It must raise a DataError (the CLI prints it as one line and exits
2) whose message is one line, names the file (and the line, where lines make sense) and
says what is wrong; and the data directory must hold exactly what it held before (no cache
directory, no entry, no temp file). A handful go through the real command line.
"""

from __future__ import annotations

import gzip
import os
import pickle
import re
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from conftest import cli

from attnbench import registry
from attnbench.data import cache
from attnbench.data.text import DataError

# ----------------------------------------------------------------------------- fixtures

UD_SENTENCE = [("The", "DET"), ("dog", "NOUN"), ("barks", "VERB"), (".", "PUNCT")]
PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x10" + bytes(range(256))  # binary
SENTENCES = [f"ein mann {i} sieht einen hund" for i in range(12)]
ENGLISH = [f"a man {i} sees a dog" for i in range(12)]


def ud_line(i: int, form: str, upos: str) -> str:
    return f"{i}\t{form}\t{form.lower()}\t{upos}\t_\t_\t0\tdep\t_\t_\n"


def write_sst2(data: Path) -> None:
    d = data / "sentiment"
    d.mkdir(parents=True)
    rows = "".join(f"{'a good film' if i % 2 else 'a dull film'} {i}\t{i % 2}\n" for i in range(12))
    for name in ("train.tsv", "dev.tsv", "test.tsv"):  # line 1 header, rows from line 2
        (d / name).write_text("sentence\tlabel\n" + rows)


def write_ud(data: Path) -> None:
    d = data / "pos"
    d.mkdir(parents=True)
    # 5 lines per sentence: 4 tokens then a blank line
    sentence = "".join(ud_line(i + 1, w, t) for i, (w, t) in enumerate(UD_SENTENCE))
    for split in ("train", "dev", "test"):
        (d / f"en_ewt-ud-{split}.conllu").write_text((sentence + "\n") * 6)


def write_multi30k(data: Path) -> None:
    d = data / "translation"
    d.mkdir(parents=True)
    for stem in ("train", "val", "test_2016_flickr"):
        (d / f"{stem}.de").write_text("\n".join(SENTENCES) + "\n")
        (d / f"{stem}.en").write_text("\n".join(ENGLISH) + "\n")


def idx_bytes(array: np.ndarray, type_code: int = 0x08) -> bytes:
    header = struct.pack(">BBBB", 0, 0, type_code, array.ndim)
    return header + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


def write_mnist(data: Path) -> None:
    d = data / "images" / "mnist"
    d.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 20), ("t10k", 10)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = (np.arange(n) % 10).astype(np.uint8)
        (d / f"{prefix}-images-idx3-ubyte").write_bytes(idx_bytes(images))
        (d / f"{prefix}-labels-idx1-ubyte").write_bytes(idx_bytes(labels))


def cifar_batch(n: int = 4, labels: list | None = None) -> bytes:
    data = np.random.default_rng(n).integers(0, 256, (n, 3072), dtype=np.uint8)
    return pickle.dumps({b"data": data, b"labels": labels or [i % 10 for i in range(n)]})


def write_cifar(data: Path) -> None:
    d = data / "images" / "cifar-10-batches-py"
    d.mkdir(parents=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        (d / name).write_bytes(cifar_batch())


def cora_arrays() -> dict[str, np.ndarray]:
    n = 10
    edges = np.array([[i, (i + 1) % n] for i in range(n)] + [[(i + 1) % n, i] for i in range(n)])
    return {
        "x": np.eye(n, 5, dtype=np.uint8),
        "y": np.arange(n) % 3,
        "edge_index": edges.T.copy(),
        "train_idx": np.arange(0, 3),
        "val_idx": np.arange(3, 6),
        "test_idx": np.arange(6, 10),
    }


def write_cora(data: Path, **arrays) -> None:
    d = data / "graph"
    d.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(d / "cora_planetoid.npz", **{**cora_arrays(), **arrays})


WRITERS = {
    ("sentiment", "sst2"): write_sst2,
    ("pos", "ud_ewt"): write_ud,
    ("translation", "multi30k"): write_multi30k,
    ("image", "mnist"): write_mnist,
    ("image", "cifar10"): write_cifar,
    ("graph", "cora"): write_cora,
}

# ----------------------------------------------------------------------------- corruptions


def set_line(k: int, content: bytes) -> Callable[[Path], None]:
    """Replace line k (1-based) of the file, keeping its newline."""

    def corrupt(path: Path) -> None:
        lines = path.read_bytes().split(b"\n")
        lines[k - 1] = content
        path.write_bytes(b"\n".join(lines))

    return corrupt


def write(content: bytes) -> Callable[[Path], None]:
    def corrupt(path: Path) -> None:
        path.write_bytes(content)

    return corrupt


def gzip_truncated(path: Path) -> int:
    """Replace ``path`` by ``path.gz`` holding the first half of its gzip stream; returns
    the line in which the readable data ends (counted with zlib, not by attnbench)."""
    cut = gzip.compress(path.read_bytes())
    cut = cut[: len(cut) // 2]
    path.unlink()
    Path(f"{path}.gz").write_bytes(cut)
    readable = zlib.decompressobj(wbits=31).decompress(cut)
    return readable.count(b"\n") + 1


def gzip_as(name: str) -> Callable[[Path], None]:
    """Gzip the file's bytes into a sibling called ``name``, removing the original."""

    def corrupt(path: Path) -> None:
        packed = gzip.compress(path.read_bytes())
        path.unlink()
        (path.parent / name).write_bytes(packed)

    return corrupt


def gzip_truncated_no_lines(path: Path) -> None:
    """As :func:`gzip_truncated`, for a binary file (no line to expect)."""
    gzip_truncated(path)


def plain_as(name: str) -> Callable[[Path], None]:
    """Rename the (uncompressed) file to ``name`` (e.g. a ``.gz`` name)."""

    def corrupt(path: Path) -> None:
        path.rename(path.parent / name)

    return corrupt


def cut(size: int) -> Callable[[Path], None]:
    """Keep the first ``size`` bytes."""

    def corrupt(path: Path) -> None:
        path.write_bytes(path.read_bytes()[:size])

    return corrupt


def savez(**arrays: np.ndarray) -> Callable[[Path], None]:
    def corrupt(path: Path) -> None:
        np.savez(path, **arrays)

    return corrupt


def remove(path: Path) -> None:
    path.unlink()


def make_directory(path: Path) -> None:
    path.unlink()
    path.mkdir()
    (path / "inside.txt").write_text("a file where the data file should be\n")


def drop_last_line(path: Path) -> None:
    path.write_text("".join(path.read_text().splitlines(keepends=True)[:-1]))


def cifar_with_global(path: Path) -> None:
    # pickle protocol 0 calling os.system: refused before it runs (had it run, the file it
    # touches would show in the data directory's listing)
    path.write_bytes(f"cos\nsystem\n(S'touch {path.parent}/pwned'\ntR.".encode())


# ----------------------------------------------------------------------------- the matrix


@dataclass
class Case:
    id: str
    task: str
    dataset: str
    file: str  # relative to the data directory; the file the message must name
    corrupt: Callable[[Path], int | None]  # may return the expected line
    words: str  # a regex the message must contain
    line: int | None = None  # expected line, where lines make sense
    target: str | None = None  # the file to corrupt, when not ``file``


SST = "sentiment/train.tsv"
UD = "pos/en_ewt-ud-dev.conllu"
M30K = "translation/val.de"
MNIST = "images/mnist/train-images-idx3-ubyte"
CIFAR = "images/cifar-10-batches-py/data_batch_2"
CORA = "graph/cora_planetoid.npz"

CASES = [
    # SST-2: TSV reader and open_text
    Case("sst2-invalid-utf8", "sentiment", "sst2", SST, set_line(4, b"caf\xe9 film\t1"),
         r"not UTF-8 text \(byte 0xe9", 4),
    Case("sst2-binary", "sentiment", "sst2", SST, write(PNG), r"not UTF-8|binary data", 1),
    Case("sst2-nul-byte", "sentiment", "sst2", SST, set_line(3, b"good\x00film\t1"),
         r"binary data \(NUL byte at column 5\)", 3),
    Case("sst2-truncated-gz", "sentiment", "sst2", "sentiment/dev.tsv.gz", gzip_truncated,
         r"compressed data ends early", target="sentiment/dev.tsv"),
    Case("sst2-gzip-without-.gz", "sentiment", "sst2", SST, gzip_as("train.tsv"),
         r"gzip-compressed data in a file not named \.gz", 1),
    Case("sst2-plain-named-.gz", "sentiment", "sst2", "sentiment/dev.tsv.gz",
         plain_as("dev.tsv.gz"), r"not gzip-compressed", target="sentiment/dev.tsv"),
    Case("sst2-empty", "sentiment", "sst2", SST, write(b""), r"is empty"),
    Case("sst2-column-count", "sentiment", "sst2", SST, set_line(5, b"a\tfilm\t1"),
         r"expected 2 tab-separated columns \(sentence, label\), got 3", 5),
    Case("sst2-bad-label", "sentiment", "sst2", SST, set_line(6, b"a film\tpositive"),
         r"label 'positive' is not 0 or 1", 6),
    Case("sst2-missing-header-column", "sentiment", "sst2", SST, set_line(1, b"text\tlabel"),
         r"lacks column\(s\) \['sentence'\]", 1),
    Case("sst2-missing", "sentiment", "sst2", "sentiment/dev.tsv", remove,
         r"missing data file .*attnbench download sst2"),
    Case("sst2-directory", "sentiment", "sst2", SST, make_directory, r"is a directory"),
    # UD English EWT: CoNLL-U reader
    Case("ud-invalid-utf8", "pos", "ud_ewt", UD, set_line(7, b"2\t\xffdog\tdog\tNOUN" + b"\t_" * 6),
         r"not UTF-8 text", 7),
    Case("ud-binary", "pos", "ud_ewt", UD, write(PNG), r"not UTF-8|binary data", 1),
    Case("ud-truncated-gz", "pos", "ud_ewt", "pos/en_ewt-ud-train.conllu.gz", gzip_truncated,
         r"compressed data ends early", target="pos/en_ewt-ud-train.conllu"),
    Case("ud-empty", "pos", "ud_ewt", UD, write(b""), r"is empty"),
    Case("ud-column-count", "pos", "ud_ewt", UD, set_line(8, b"3\tbarks\tbark\tVERB"),
         r"expected 10 tab-separated CoNLL-U columns", 8),
    Case("ud-bad-tag", "pos", "ud_ewt", UD, set_line(2, ud_line(2, "dog", "NOUNY").encode()[:-1]),
         r"UPOS 'NOUNY' \(column 4\) is not a universal POS tag", 2),
    Case("ud-missing", "pos", "ud_ewt", "pos/en_ewt-ud-test.conllu", remove,
         r"missing data file .*attnbench download ud_ewt"),
    Case("ud-directory", "pos", "ud_ewt", UD, make_directory, r"is a directory"),
    # Multi30k: parallel text reader
    Case("m30k-invalid-utf8", "translation", "multi30k", M30K, set_line(3, b"ein m\xe4nner"),
         r"not UTF-8 text.*attnbench download multi30k", 3),
    Case("m30k-truncated-gz", "translation", "multi30k", "translation/train.en.gz",
         gzip_truncated, r"compressed data ends early", target="translation/train.en"),
    Case("m30k-misaligned", "translation", "multi30k", M30K, drop_last_line,
         r"no counterpart in val\.en .*line-aligned", 12, target="translation/val.en"),
    Case("m30k-empty-line", "translation", "multi30k", M30K, set_line(5, b"  "),
         r"empty line", 5),
    Case("m30k-binary", "translation", "multi30k", M30K, write(PNG), r"not UTF-8|binary", 1),
    Case("m30k-missing", "translation", "multi30k", "translation/test_2016_flickr.en",
         remove, r"missing data file"),
    # MNIST: IDX reader
    Case("mnist-truncated-idx", "image", "mnist", MNIST,
         cut(5000), r"5000 bytes, expected 15696"),
    Case("mnist-wrong-magic", "image", "mnist", MNIST,
         write(b"\x00\x00\x07\x03" + idx_bytes(np.zeros((20, 28, 28), np.uint8))[4:]),
         r"not an IDX file \(magic 00000703"),
    Case("mnist-truncated-gz", "image", "mnist", MNIST + ".gz", gzip_truncated_no_lines,
         r"compressed data ends early", target=MNIST),
    Case("mnist-empty", "image", "mnist", MNIST, write(b""), r"not an IDX file.*empty"),
    Case("mnist-garbage", "image", "mnist", MNIST, write(PNG), r"not an IDX file"),
    Case("mnist-label-count", "image", "mnist", "images/mnist/t10k-labels-idx1-ubyte",
         write(idx_bytes(np.zeros(9, np.uint8))), r"labels of shape \(9,\)"),
    Case("mnist-bad-label", "image", "mnist", "images/mnist/t10k-labels-idx1-ubyte",
         write(idx_bytes(np.full(10, 12, np.uint8))), r"label 12 out of range"),
    Case("mnist-directory", "image", "mnist", MNIST, make_directory, r"is a directory"),
    # CIFAR-10: restricted unpickler
    Case("cifar-garbage", "image", "cifar10", CIFAR, write(PNG), r"not a CIFAR-10 python batch"),
    Case("cifar-truncated", "image", "cifar10", CIFAR, cut(100),
         r"not a CIFAR-10 python batch"),
    Case("cifar-code-in-pickle", "image", "cifar10", CIFAR, cifar_with_global,
         r"global (posix|os)\.system is not allowed"),
    Case("cifar-bad-label", "image", "cifar10", CIFAR, write(cifar_batch(4, [0, 1, 2, 10])),
         r"labels outside 0\.\.9"),
    Case("cifar-missing", "image", "cifar10", CIFAR, remove, r"missing data file"),
    # Cora: .npz reader
    Case("cora-garbage", "graph", "cora", CORA, write(b"just some text, not an archive\n" * 9),
         r"not a readable \.npz \(starts with bytes 6a757374"),
    Case("cora-truncated", "graph", "cora", CORA, cut(300), r"not a readable \.npz"),
    Case("cora-empty", "graph", "cora", CORA, write(b""), r"not a readable \.npz \(is empty"),
    Case("cora-missing-array", "graph", "cora", CORA,
         savez(**{k: v for k, v in cora_arrays().items() if k != "y"}),
         r"lacks array\(s\) \['y'\]"),
    Case("cora-edge-out-of-range", "graph", "cora", CORA,
         savez(**{**cora_arrays(), "edge_index": np.array([[0], [99]])}),
         r"edge_index holds node ids outside 0\.\.9"),
    Case("cora-directory", "graph", "cora", CORA, make_directory, r"is a directory"),
    Case("cora-missing", "graph", "cora", CORA, remove, r"missing data file"),
]  # fmt: skip


def listing(root: Path) -> list[tuple[str, int, int]]:
    """Every path under root (hidden ones included) with its size and mtime."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            st = path.stat()
            out.append((str(path.relative_to(root)), st.st_size, st.st_mtime_ns))
    return sorted(out)


@pytest.fixture
def data(tmp_path, monkeypatch) -> Path:
    """An empty data directory, and a cache of this test's own at its default place."""
    monkeypatch.delenv(cache.CACHE_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    return tmp_path / "data"


def setup_task(task: str, dataset: str, data: Path):
    t = registry.build("task", task, data_dir=str(data), dataset=dataset)
    t.setup()
    return t


def test_the_matrix_is_large_and_covers_every_reader():
    assert len(CASES) >= 25 and len({c.id for c in CASES}) == len(CASES)
    assert {(c.task, c.dataset) for c in CASES} == set(WRITERS)


@pytest.mark.parametrize(("task", "dataset"), list(WRITERS))
def test_the_intact_fixture_loads(task, dataset, data):
    """The control: each fixture is valid, so a case's error comes from its corruption."""
    WRITERS[task, dataset](data)
    setup_task(task, dataset, data)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_data_is_one_line_naming_the_file(case, data):
    WRITERS[case.task, case.dataset](data)
    line = case.corrupt(data / (case.target or case.file))
    line = case.line if line is None else line
    before = listing(data)
    with pytest.raises(DataError) as err:
        setup_task(case.task, case.dataset, data)
    message = str(err.value)
    assert "\n" not in message, message
    assert str(data / case.file) in message, message
    if line is not None:
        assert f"{data / case.file}:{line}: " in message, message
    assert re.search(case.words, message), message
    assert "Traceback" not in message
    assert listing(data) == before  # no cache directory, entry or temp file
    assert not (data.parent / "home").exists()  # nor a fallback cache


def test_utf8_with_byte_order_mark_and_crlf_is_read(data):
    """Not corruption: what an editor on Windows saves. The header still has its columns."""
    write_sst2(data)
    train = data / SST
    train.write_bytes(b"\xef\xbb\xbf" + train.read_bytes().replace(b"\n", b"\r\n"))
    task = setup_task("sentiment", "sst2", data)
    assert len(task.splits["train"]) == 12


def test_cora_garbage_no_longer_mentions_pickles(data):
    write_cora(data)
    (data / CORA).write_bytes(b"\x07" * 500)
    with pytest.raises(DataError) as err:
        setup_task("graph", "cora", data)
    assert "pickle" not in str(err.value).lower()


def test_a_corrupt_copy_never_replaces_a_good_cache(data):
    """A good run caches; after the file is damaged the run fails and the cache holds
    the same single entry as before (no entry for the corrupt input)."""
    write_sst2(data)
    setup_task("sentiment", "sst2", data)
    entries = sorted(p.name for p in cache.cache_dir().iterdir())
    assert len(entries) == 1
    set_line(3, b"\xff\xfe")(data / SST)
    before = listing(data)
    with pytest.raises(DataError, match=r"train\.tsv:3: not UTF-8"):
        setup_task("sentiment", "sst2", data)
    assert listing(data) == before
    assert sorted(p.name for p in cache.cache_dir().iterdir()) == entries


def test_idx_header_with_huge_sizes_is_an_error_not_an_overflow(tmp_path):
    from attnbench.data.images import read_idx

    path = tmp_path / "big-idx3-ubyte"
    path.write_bytes(struct.pack(">BBBB4I", 0, 0, 0x08, 4, *[2**32 - 1] * 4) + b"\0" * 10)
    with pytest.raises(DataError, match=r"big-idx3-ubyte: 30 bytes, expected \d{30,}"):
        read_idx(path)


# ----------------------------------------------------------------------------- the CLI

CLI_CASES = [
    ("sentiment", "sst2", SST, set_line(4, b"caf\xe9\t1"), 4),
    ("pos", "ud_ewt", UD, set_line(8, b"3\tbarks"), 8),
    ("translation", "multi30k", "translation/train.en.gz", gzip_truncated, None),
    ("image", "mnist", MNIST, write(b"\x00\x00\x07\x03"), None),
    ("graph", "cora", CORA, write(b"not an archive"), None),
]


@pytest.mark.parametrize(
    ("task", "dataset", "file", "corrupt", "line"), CLI_CASES, ids=[c[1] for c in CLI_CASES]
)
def test_command_line_exits_2_with_one_line(task, dataset, file, corrupt, line, data, tmp_path):
    WRITERS[task, dataset](data)
    target = data / (file[:-3] if file.endswith(".gz") else file)
    line = corrupt(target) or line
    before = listing(data)
    run_dir = tmp_path / "run"
    result = cli(
        f"data_dir={data}",
        f"task={task}",
        f"task.dataset={dataset}",
        "trainer.accelerator=cpu",
        "logger=none",
        f"hydra.run.dir={run_dir}",
        env={"HOME": str(tmp_path / "home")},
    )
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    errors = [x for x in result.stderr.splitlines() if x.startswith("attnbench: error:")]
    assert len(errors) == 1, result.stderr
    where = f"{data / file}:{line}: " if line else f"{data / file}: "
    assert where in errors[0], errors[0]
    assert listing(data) == before
