"""Text helpers shared by token tasks: readers, vocabulary, padded batches.

Every reader opens data files through :func:`open_text`, so a file that is missing, a
directory, not UTF-8, binary or a truncated ``.gz`` is a one-line :class:`DataError` naming
``file:line`` (or the file, where lines make no sense) and how to get a good copy.
"""

from __future__ import annotations

import gzip
import zlib
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path

import torch
from torch import Tensor

from attnbench.data.errors import DataError, one_line

PAD, UNK = "<pad>", "<unk>"
GZIP_MAGIC = b"\x1f\x8b"


def how_to_replace(path: Path) -> str:
    """The fix for a corrupt data file: the `attnbench download` command that fetches it
    again when it is one of the downloadable files, else a generic hint."""
    from attnbench.data.download import SOURCES  # lazy: downloading needs no torch

    path = Path(path)
    for name, source in SOURCES.items():
        for remote in source.files:
            dest = Path(source.folder) / remote.dest
            plain = dest.with_suffix("") if dest.suffix == ".gz" else dest
            for variant in (plain, plain.with_name(plain.name + ".gz")):
                parts = len(variant.parts)
                if path.parts[-parts:] == variant.parts and len(path.parts) > parts:
                    root = Path(*path.parts[:-parts])
                    return f"re-download it with `attnbench download {name} --data-dir {root}`"
    return "replace it with an intact copy"


def unreadable(path: Path, error: OSError) -> DataError:
    """A DataError for a file that cannot be opened or read at all."""
    if isinstance(error, FileNotFoundError):
        return DataError(f"missing data file {path}")
    if isinstance(error, IsADirectoryError) or Path(path).is_dir():
        return DataError(f"{path}: is a directory; expected a data file (remove or rename it)")
    if isinstance(error, PermissionError):
        return DataError(f"{path}: permission denied; make the file readable (chmod a+r)")
    reason = error.strerror or one_line(error)
    return DataError(f"{path}: cannot read ({reason}); {how_to_replace(path)}")


class TextFile:
    """Lines of a UTF-8 text file (``.gz`` decompressed) that turns every decoding or
    decompression error into a DataError at ``file:line``.

    A line is handed out only once the next one has been read, so a truncated ``.gz`` never
    yields its cut last line: the reader sees the truncation before parsing that line."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.lineno = 0  # the number of the line last handed out
        try:
            compressed = self.path.suffix == ".gz"
            self._raw = gzip.open(self.path, "rb") if compressed else open(self.path, "rb")
        except OSError as e:
            raise unreadable(self.path, e) from None
        self._lines = iter(self._raw)  # binary lines: decoded one by one
        self._next: bytes | None = None
        try:
            self._prefetch()
        except DataError:
            self._raw.close()
            raise

    def _prefetch(self) -> None:
        where = f"{self.path}:{self.lineno + 1}"
        try:
            self._next = next(self._lines, None)
        except gzip.BadGzipFile:
            raise DataError(
                f"{self.path}: not gzip-compressed although named .gz; "
                f"{how_to_replace(self.path)} (or drop the .gz suffix if it is plain text)"
            ) from None
        except (EOFError, zlib.error):
            raise DataError(
                f"{where}: the compressed data ends early or is corrupt (a truncated "
                f"download?); {how_to_replace(self.path)}"
            ) from None
        except OSError as e:
            raise unreadable(self.path, e) from None

    def readline(self) -> str:
        """The next line with its newline, or "" at the end (as ``io`` files do)."""
        raw = self._next
        if raw is None:
            return ""
        self.lineno += 1
        text = self._decode(raw)
        self._prefetch()
        return text

    def _decode(self, raw: bytes) -> str:
        where = f"{self.path}:{self.lineno}"
        if self.lineno == 1 and raw.startswith(GZIP_MAGIC):
            raise DataError(
                f"{where}: gzip-compressed data in a file not named .gz; "
                f"rename it to {self.path.name}.gz or decompress it"
            )
        if b"\0" in raw:
            column = raw.index(b"\0") + 1
            raise DataError(
                f"{where}: binary data (NUL byte at column {column}); expected UTF-8 text: "
                f"{how_to_replace(self.path)}"
            )
        try:  # a byte-order mark (Excel's UTF-8) is not part of the first line
            return raw.decode("utf-8-sig" if self.lineno == 1 else "utf-8")
        except UnicodeDecodeError as e:
            raise DataError(
                f"{where}: not UTF-8 text (byte 0x{raw[e.start]:02x} at column {e.start + 1}); "
                f"save the file as UTF-8 or {how_to_replace(self.path)}"
            ) from None

    def __iter__(self) -> Iterator[str]:
        while line := self.readline():
            yield line

    def close(self) -> None:
        self._raw.close()

    def __enter__(self) -> TextFile:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_text(path: Path) -> TextFile:
    """``path`` (plain or ``.gz``) for reading UTF-8 lines; errors name file:line."""
    return TextFile(path)


def find_file(directory: Path, stem: str, how_to_get: str) -> Path:
    """``stem`` or ``stem.gz`` inside ``directory``, or a DataError saying where it goes."""
    for candidate in (directory / stem, directory / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    for candidate in (directory / stem, directory / f"{stem}.gz"):
        if candidate.exists():
            raise DataError(
                f"{candidate}: is a directory (or not a regular file); expected the "
                f"data file; {how_to_get}"
            )
    raise DataError(f"missing data file {directory / stem}[.gz]; {how_to_get}")


def read_tsv(path: Path, columns: tuple[str, ...]) -> Iterator[tuple[int, dict[str, str]]]:
    """Rows of a headed TSV as (line number, {column: value}); bad rows name file:line."""
    with open_text(path) as f:
        first = f.readline()
        if not first.strip():
            where = f"{path}: is empty" if not first else f"{path}:1: blank header line"
            raise DataError(
                f"{where}; expected a header line with the tab-separated columns "
                f"{', '.join(columns)}"
            )
        header = [h.strip() for h in first.rstrip("\r\n").split("\t")]
        missing = [c for c in columns if c not in header]
        if missing:
            raise DataError(
                f"{path}:1: header {header} lacks column(s) {missing}; "
                f"expected a header line with {', '.join(columns)}"
            )
        index = [header.index(c) for c in columns]
        for line in f:
            fields = line.rstrip("\r\n").split("\t")
            if len(fields) != len(header):
                raise DataError(
                    f"{path}:{f.lineno}: expected {len(header)} tab-separated columns "
                    f"({', '.join(header)}), got {len(fields)}"
                )
            yield f.lineno, {c: fields[i].strip() for c, i in zip(columns, index)}


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
