"""Text helpers shared by token tasks: readers, vocabulary, padded batches."""

from __future__ import annotations

import gzip
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path

import torch
from torch import Tensor

from attnbench.registry import AttnbenchError

PAD, UNK = "<pad>", "<unk>"


class DataError(AttnbenchError):
    """Bad or missing data: the message names the file (and line) and the fix."""


def open_text(path: Path):
    return (
        gzip.open(path, "rt", encoding="utf-8")
        if path.suffix == ".gz"
        else open(path, encoding="utf-8")
    )


def find_file(directory: Path, stem: str, how_to_get: str) -> Path:
    """``stem`` or ``stem.gz`` inside ``directory``, or a DataError saying where it goes."""
    for candidate in (directory / stem, directory / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    raise DataError(f"missing data file {directory / stem}[.gz]; {how_to_get}")


def read_tsv(path: Path, columns: tuple[str, ...]) -> Iterator[tuple[int, dict[str, str]]]:
    """Rows of a headed TSV as (line number, {column: value}); bad rows name file:line."""
    with open_text(path) as f:
        header = f.readline().rstrip("\n").split("\t")
        missing = [c for c in columns if c not in header]
        if missing:
            raise DataError(
                f"{path}:1: header {header} lacks column(s) {missing}; "
                f"expected a header line with {', '.join(columns)}"
            )
        index = [header.index(c) for c in columns]
        for lineno, line in enumerate(f, start=2):
            fields = line.rstrip("\n").split("\t")
            if len(fields) != len(header):
                raise DataError(
                    f"{path}:{lineno}: expected {len(header)} tab-separated fields, "
                    f"got {len(fields)}"
                )
            yield lineno, {c: fields[i].strip() for c, i in zip(columns, index)}


class Vocab:
    """Token <-> id, with <pad> = 0 and <unk> = 1."""

    def __init__(self, tokens: Iterable[str]):
        self.itos = [PAD, UNK, *tokens]
        self.stoi = {t: i for i, t in enumerate(self.itos)}

    @classmethod
    def build(
        cls, sentences: Iterable[list[str]], min_freq: int = 1, max_size: int | None = None
    ) -> Vocab:
        counts = Counter(t for s in sentences for t in s)
        ranked = sorted(
            (t for t, c in counts.items() if c >= min_freq), key=lambda t: (-counts[t], t)
        )
        return cls(ranked[:max_size])

    def __len__(self) -> int:
        return len(self.itos)

    def encode(self, tokens: list[str]) -> Tensor:
        unk = self.stoi[UNK]
        return torch.tensor([self.stoi.get(t, unk) for t in tokens], dtype=torch.long)
