"""The on-disk preprocessing cache: reuse, invalidation, atomic writes, placement."""

from __future__ import annotations

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
    path.write_bytes(b"not a torch file")
    payload, _, hit = cache.cached("t", [src], {}, lambda: {"a": 1}, tmp_path)
    assert (payload, hit) == ({"a": 1}, False)


def test_cache_dir_placement(tmp_path, monkeypatch):
    monkeypatch.delenv(cache.CACHE_ENV, raising=False)
    assert cache.cache_dir(tmp_path / "data") == tmp_path / "data" / ".cache"
    # A data directory we cannot write into (here: .cache cannot be created at all, which
    # also holds for root, unlike chmod) falls back to the user's cache.
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache.cache_dir(not_a_dir) == tmp_path / "home" / ".cache" / "attnbench" / "cache"
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
