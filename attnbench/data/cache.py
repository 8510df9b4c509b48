"""On-disk cache of preprocessed data (vocabularies, token ids), built once per input.

An entry's key is the sha256 of its source files plus the settings that shaped it
(min_freq, max_size, lowercase, ...), so changing a file or a setting builds a new entry
and the old one is simply not used. Entries are written to a temporary file and renamed
(``os.replace``), so a crash or a bad input file never leaves a half-written entry; the
cache directory itself is created only when an entry is written, so a run that fails on
bad data leaves nothing behind. A temporary file left by a killed writer is removed by the
next run that uses the cache (see :func:`remove_stale_temps`). Entries follow the umask
(``tempfile`` alone would make them 0600, awkward in a shared data directory).

Where: ``$ATTNBENCH_CACHE`` if set, else ``attnbench/cache`` under the user's cache directory
(``$XDG_CACHE_HOME``, default ``~/.cache``). Never in the data directory: that is input, often
shared or read-only.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from attnbench.data.text import unreadable

CACHE_ENV = "ATTNBENCH_CACHE"
FORMAT = 1  # bump when the layout of cached payloads changes
STALE_AFTER_S = 3600  # a temp file this old is abandoned whoever wrote it
# .<entry>.pt.<host>-<pid>.<random>.tmp names its writer, so a later run can tell whether
# it is gone (temp files of earlier versions lack <host>-<pid>: only their age tells)
_TEMP = re.compile(r"\.[\w-]+\.pt\.(?:(?P<host>[\w-]*)-(?P<pid>\d+)\.)?\w+\.tmp")


def cache_dir(data_dir: str | Path | None = None) -> Path:
    """The directory entries go to (``data_dir`` is not used: entries are keyed by their
    sources' contents, wherever they live). Not created here: :func:`save_atomic` creates
    it when it writes the first entry."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    user_cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(user_cache).expanduser() / "attnbench" / "cache"


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            while block := f.read(chunk):
                h.update(block)
    except OSError as e:
        raise unreadable(Path(path), e) from None
    return h.hexdigest()


def entry_path(
    name: str, sources: Sequence[Path], settings: dict[str, Any], data_dir: str | Path
) -> Path:
    """Where the entry for these sources and settings lives."""
    key = json.dumps(
        {
            "format": FORMAT,
            "name": name,
            "settings": settings,
            "sources": [file_sha256(Path(p)) for p in sources],
        },
        sort_keys=True,
    )
    digest = hashlib.sha256(key.encode()).hexdigest()[:20]
    return cache_dir(data_dir) / f"{name}-{digest}.pt"


def _host() -> str:
    return re.sub(r"[^\w-]", "_", socket.gethostname()) or "host"


def _umask() -> int:
    try:  # Linux: read it without changing it (setting it races with other threads)
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _created_dirs(directory: Path) -> list[Path]:
    """The directories ``mkdir(parents=True)`` would create for ``directory``, outermost
    first."""
    missing = []
    while not directory.exists() and directory.parent != directory:
        missing.append(directory)
        directory = directory.parent
    return missing[::-1]


def save_atomic(obj: Any, path: Path) -> None:
    """torch.save to a temp file in the same directory, then rename over ``path``. The
    file gets the umask's mode; on failure nothing is left, not even a directory made for
    it."""
    made = _created_dirs(path.parent)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(
            dir=path.parent, prefix=f".{path.name}.{_host()}-{os.getpid()}.", suffix=".tmp"
        )
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes it 0600
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
        os.replace(tmp, path)
    except BaseException:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        for directory in reversed(made):
            try:
                directory.rmdir()  # only if still empty: a concurrent writer may use it
            except OSError:
                break
        raise


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def remove_stale_temps(directory: Path, now: float | None = None) -> list[Path]:
    """Remove the temp files of cache writes that were killed: those whose writer (host and
    pid in the name) is no longer running on this host, and any older than STALE_AFTER_S
    (a writer on another host, or a reused pid). A live writer's file is left alone, so
    two runs may fill the same cache at once. Returns the files removed."""
    now = time.time() if now is None else now
    removed = []
    try:
        candidates = [p for p in directory.iterdir() if p.name.endswith(".tmp")]
    except OSError:  # no cache directory yet, or not ours to list
        return removed
    host = _host()
    for tmp in candidates:
        match = _TEMP.fullmatch(tmp.name)
        if match is None:  # not one of ours
            continue
        try:
            old = now - tmp.stat().st_mtime > STALE_AFTER_S
        except OSError:  # renamed or removed meanwhile
            continue
        pid = match["pid"]
        dead = pid is not None and match["host"] == host and not _alive(int(pid))
        if old or dead:
            try:
                tmp.unlink()
                removed.append(tmp)
            except OSError:
                pass
    return removed


def cached(
    name: str,
    sources: Sequence[Path],
    settings: dict[str, Any],
    build: Callable[[], dict[str, Any]],
    data_dir: str | Path,
) -> tuple[dict[str, Any], Path, bool]:
    """``build()``'s payload (tensors, lists, strings, numbers), from disk when an entry
    for the same source bytes and settings exists. Returns (payload, entry path, hit)."""
    path = entry_path(name, sources, settings, data_dir)
    remove_stale_temps(path.parent)
    if path.is_file():
        try:
            return torch.load(path, weights_only=True), path, True
        except Exception:  # unreadable entry (e.g. written by another version): rebuild
            pass
    payload = build()  # may raise DataError: nothing has been written yet
    save_atomic(payload, path)
    return payload, path, False


def pack(seqs: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Variable-length tensors -> (one concatenated tensor, lengths): cheap to save/load."""
    lengths = torch.tensor([len(s) for s in seqs], dtype=torch.long)
    flat = torch.cat(list(seqs)) if seqs else torch.zeros(0, dtype=torch.long)
    return flat, lengths


def unpack(flat: torch.Tensor, lengths: torch.Tensor) -> list[torch.Tensor]:
    """Inverse of :func:`pack` (views into ``flat``, no copy)."""
    return list(torch.split(flat, lengths.tolist()))
