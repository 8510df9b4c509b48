"""On-disk cache of preprocessed data (vocabularies, token ids), built once per input.

An entry's key is the sha256 of its source files plus the settings that shaped it
(min_freq, max_size, lowercase, ...), so changing a file or a setting builds a new entry
and the old one is simply not used. Entries are written to a temporary file and renamed
(``os.replace``), so a crash or a bad input file never leaves a half-written entry.

Where: ``$ATTNBENCH_CACHE`` if set, else ``<data_dir>/.cache`` when that is writable, else
``~/.cache/attnbench/cache`` (the shared data directory may be read-only).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

CACHE_ENV = "ATTNBENCH_CACHE"
FORMAT = 1  # bump when the layout of cached payloads changes


def cache_dir(data_dir: str | Path) -> Path:
    """The directory entries go to (created if needed)."""
    if os.environ.get(CACHE_ENV):
        path = Path(os.environ[CACHE_ENV]).expanduser()
        path.mkdir(parents=True, exist_ok=True)
        return path
    path = Path(data_dir).expanduser() / ".cache"
    try:
        path.mkdir(parents=True, exist_ok=True)
        if os.access(path, os.W_OK):
            return path
    except OSError:
        pass
    path = Path.home() / ".cache" / "attnbench" / "cache"
    path.mkdir(parents=True, exist_ok=True)
    return path


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
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


def save_atomic(obj: Any, path: Path) -> None:
    """torch.save to a temp file in the same directory, then rename over ``path``."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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
