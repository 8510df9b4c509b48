"""The on-disk preprocessing cache: reuse, invalidation, atomic writes, placement."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time

import pytest
import torch
from test_pos import write_ud
from test_sentiment import write_sst2

from attnbench import registry
from attnbench.data import cache
from attnbench.data.text import DataError


@pytest.fixture
def cache_env(tmp_path, monkeypatch):
    path = tmp_path / "cache"
    monkeypatch.setenv(cache.CACHE_ENV, str(path))
    return path


def _entries(path):
    return sorted(p.name for p in path.iterdir()) if path.exists() else []


def test_cached_reuses_and_rebuilds_on_change(tmp_path, cache_env):
    src = tmp_path / "data.txt"
    src.write_text("one")
    calls = []

    def build():
        calls.append(1)
        return {"x": torch.arange(3), "words": ["a", "b"]}

    first, path, hit = cache.cached("t", [src], {"k": 1}, build, tmp_path)
    again, path2, hit2 = cache.cached("t", [src], {"k": 1}, build, tmp_path)
    assert (hit, hit2, len(calls), path2) == (False, True, 1, path)
    assert torch.equal(again["x"], first["x"]) and again["words"] == ["a", "b"]
    cache.cached("t", [src], {"k": 2}, build, tmp_path)  # another setting: another entry
    src.write_text("two")  # same settings, new bytes: rebuilt
    _, path3, hit3 = cache.cached("t", [src], {"k": 1}, build, tmp_path)
    assert (hit3, len(calls)) == (False, 3) and path3 != path


def test_failed_build_or_write_leaves_nothing(tmp_path, cache_env, monkeypatch):
    src = tmp_path / "data.txt"
    src.write_text("x")

    def bad():
        raise DataError("bad input")

    with pytest.raises(DataError):
        cache.cached("t", [src], {}, bad, tmp_path)
    assert _entries(cache_env) == []

    def torn_save(obj, f):  # a crash half-way through writing
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(cache.torch, "save", torn_save)
    with pytest.raises(OSError):
        cache.cached("t", [src], {}, lambda: {"a": 1}, tmp_path)
    assert _entries(cache_env) == []


def test_unreadable_entry_is_rebuilt(tmp_path, cache_env):
    src = tmp_path / "data.txt"
    src.write_text("x")
    path = cache.entry_path("t", [src], {}, tmp_path)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not a torch file")
    payload, _, hit = cache.cached("t", [src], {}, lambda: {"a": 1}, tmp_path)
    assert (payload, hit) == ({"a": 1}, False)


def test_cache_dir_placement(tmp_path, monkeypatch):
    monkeypatch.delenv(cache.CACHE_ENV, raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    expected = tmp_path / "home" / ".cache" / "attnbench" / "cache"
    assert cache.cache_dir(tmp_path / "data") == expected  # never inside the data directory
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache.cache_dir(tmp_path / "data") == tmp_path / "xdg" / "attnbench" / "cache"
    monkeypatch.setenv(cache.CACHE_ENV, str(tmp_path / "mine"))
    assert cache.cache_dir(tmp_path / "data") == tmp_path / "mine"


def test_pack_unpack_roundtrip():
    seqs = [torch.tensor([1, 2, 3]), torch.tensor([4]), torch.tensor([5, 6])]
    flat, lengths = cache.pack(seqs)
    assert lengths.tolist() == [3, 1, 2]
    assert [s.tolist() for s in cache.unpack(flat, lengths)] == [s.tolist() for s in seqs]


def test_pos_task_uses_cache(tmp_path, cache_env):
    data = write_ud(tmp_path / "data")

    def setup():
        task = registry.build("task", "pos", data_dir=str(data), dataset="ud_ewt")
        task.setup()
        return task

    first, second = setup(), setup()
    assert (first.from_cache, second.from_cache) == (False, True)
    assert second.cache_path == first.cache_path and second.sizes == first.sizes
    for split in ("train", "test"):
        a, b = first.splits[split], second.splits[split]
        assert all(
            torch.equal(a[i][0], b[i][0]) and torch.equal(a[i][1], b[i][1]) for i in range(len(a))
        )
    test = data / "pos" / "en_ewt-ud-test.conllu"
    test.write_text(test.read_text().replace("\tdog\tdog\t", "\tcat\tcat\t"))
    assert setup().from_cache is False  # the file changed: rebuilt


def test_the_data_directory_is_only_read(tmp_path, monkeypatch):
    """Caches go under the user's cache directory: a shared or read-only data directory is
    input only (nothing is written there, not even a .cache folder)."""
    monkeypatch.delenv(cache.CACHE_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    data = write_ud(tmp_path / "data")
    before = sorted(p.relative_to(data) for p in data.rglob("*"))
    task = registry.build("task", "pos", data_dir=str(data), dataset="ud_ewt")
    task.setup()
    assert sorted(p.relative_to(data) for p in data.rglob("*")) == before
    assert task.cache_path.parent == tmp_path / "xdg" / "attnbench" / "cache"


def test_malformed_file_leaves_no_cache(tmp_path, cache_env):
    data = write_ud(tmp_path / "data")
    dev = data / "pos" / "en_ewt-ud-dev.conllu"
    dev.write_text(dev.read_text() + "1\tbroken line\n")
    task = registry.build("task", "pos", data_dir=str(data), dataset="ud_ewt")
    with pytest.raises(DataError, match=r"en_ewt-ud-dev\.conllu:\d+: expected 10"):
        task.setup()
    assert _entries(cache_env) == []


def test_sentiment_task_uses_cache(tmp_path, cache_env):
    data = write_sst2(tmp_path / "data", unlabeled_test=False)

    def setup(**kw):
        task = registry.build("task", "sentiment", data_dir=str(data), dataset="sst2", **kw)
        task.setup()
        return task

    assert [setup().from_cache, setup().from_cache] == [False, True]
    assert setup(lowercase=False).from_cache is False  # a setting is part of the key
    assert len(_entries(cache_env)) == 2


# ----------------------------------------------------------------------------- leftovers

KILLED_WRITER = """
import sys, time
from pathlib import Path
import torch
from attnbench.data import cache

def stalled_save(obj, f):  # writes part of the entry, then hangs until killed
    f.write(b"partial entry")
    f.flush()
    time.sleep(600)

torch.save = stalled_save
src, data = Path(sys.argv[1]), Path(sys.argv[2])
cache.cached("t", [src], {}, lambda: {"a": 1}, data)
"""


def _temps(path):
    return sorted(p.name for p in path.glob(".*.tmp")) if path.exists() else []


def test_temp_file_of_a_killed_writer_is_removed_by_the_next_run(tmp_path, monkeypatch):
    monkeypatch.delenv(cache.CACHE_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    data = tmp_path / "data"
    data.mkdir()
    src = data / "data.txt"
    src.write_text("x")
    writer = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, str(src), str(data)])
    try:
        deadline = time.monotonic() + 120
        while not _temps(cache.cache_dir()) and time.monotonic() < deadline:
            assert writer.poll() is None, "the writer died before writing"
            time.sleep(0.1)
    finally:
        writer.kill()  # SIGKILL: no handler, no cleanup
        writer.wait()
    leftover = _temps(cache.cache_dir())
    assert len(leftover) == 1  # what the kill left behind
    payload, path, hit = cache.cached("t", [src], {}, lambda: {"a": 2}, data)
    assert (payload, hit) == ({"a": 2}, False)
    assert _temps(cache.cache_dir()) == [] and sorted(cache.cache_dir().iterdir()) == [path]


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_stale_temp_rules(tmp_path, cache_env):
    """Removed: a writer that is gone (this host), anything over an hour old. Kept: a live
    writer's file (another run filling the cache now), a recent one from another host, and
    files that are not ours."""
    cache_env.mkdir()
    host = cache._host()
    names = {
        "dead": f".t-1.pt.{host}-{_dead_pid()}.abc123.tmp",
        "live": f".t-1.pt.{host}-{os.getpid()}.abc123.tmp",
        "other host": f".t-1.pt.elsewhere-{os.getpid()}.abc123.tmp",
        "other host, old": f".t-2.pt.elsewhere-{os.getpid()}.abc123.tmp",
        "old format, old": ".t-3.pt.k2j3_x9q.tmp",
        "old format, recent": ".t-4.pt.k2j3_x9q.tmp",
        "not ours, old": ".notes.tmp",
    }
    for name in names.values():
        (cache_env / name).write_bytes(b"partial")
    two_hours_ago = time.time() - 7200
    for key in ("other host, old", "old format, old", "not ours, old"):
        os.utime(cache_env / names[key], (two_hours_ago, two_hours_ago))
    cache.cached("t", [], {}, lambda: {"a": 1}, tmp_path)
    kept = {k for k, name in names.items() if (cache_env / name).exists()}
    assert kept == {"live", "other host", "old format, recent", "not ours, old"}


@pytest.fixture
def umask():
    """Set the process umask for one test, restoring it after."""
    old = os.umask(0o077)
    yield os.umask
    os.umask(old)


@pytest.mark.parametrize(
    ("mask", "file_mode", "dir_mode"), [(0o022, 0o644, 0o755), (0o002, 0o664, 0o775)]
)
def test_cache_files_follow_the_umask(tmp_path, monkeypatch, umask, mask, file_mode, dir_mode):
    monkeypatch.delenv(cache.CACHE_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    umask(mask)
    src = tmp_path / "data.txt"
    src.write_text("x")
    _, path, _ = cache.cached("t", [src], {}, lambda: {"a": 1}, tmp_path / "data")
    assert stat.S_IMODE(path.stat().st_mode) == file_mode
    assert stat.S_IMODE(path.parent.stat().st_mode) == dir_mode


def test_failure_in_the_default_location_leaves_the_data_directory_as_it_was(tmp_path, monkeypatch):
    """No entry, no temp file and no .cache directory: the data directory is untouched."""
    monkeypatch.delenv(cache.CACHE_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    data = tmp_path / "data"
    data.mkdir()
    src = data / "data.txt"
    src.write_text("x")

    def bad():
        raise DataError("bad input")

    with pytest.raises(DataError):
        cache.cached("t", [src], {}, bad, data)
    assert _entries(data) == ["data.txt"]

    def torn_save(obj, f):
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(cache.torch, "save", torn_save)
    with pytest.raises(OSError, match="disk full"):
        cache.cached("t", [src], {}, lambda: {"a": 1}, data)
    assert _entries(data) == ["data.txt"]
