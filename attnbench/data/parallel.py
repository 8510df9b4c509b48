"""Parallel text: two line-aligned files (one sentence per line, plain or .gz), a word
tokenizer with its inverse, and padded source/target batches for sequence-to-sequence tasks.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import Dataset

from attnbench.data.text import DataError, open_text

BOS, EOS = "<s>", "</s>"  # target-side specials, right after <pad>=0 and <unk>=1
# Words (with inner hyphens/apostrophes: "t-shirt", "man's") or single punctuation marks.
_TOKEN = re.compile(r"\w+(?:[-'’]\w+)*|[^\w\s]")
_NO_SPACE_BEFORE = re.compile(r" ([.,!?;:%)\]}])")
_NO_SPACE_AFTER = re.compile(r"([(\[{]) ")


def tokenize(text: str, lowercase: bool = False) -> list[str]:
    """'A man, in a T-shirt.' -> ['A', 'man', ',', 'in', 'a', 'T-shirt', '.']"""
    return _TOKEN.findall(text.lower() if lowercase else text)


def detokenize(tokens: Sequence[str]) -> str:
    """Inverse of :func:`tokenize` up to spacing: no space before closing punctuation."""
    text = " ".join(tokens)
    return _NO_SPACE_AFTER.sub(r"\1", _NO_SPACE_BEFORE.sub(r"\1", text))


def read_lines(path: Path) -> list[str]:
    """Stripped lines of a text file; an empty line is an error naming file and line."""
    with open_text(path) as f:
        lines = [line.strip() for line in f]
    for lineno, line in enumerate(lines, start=1):
        if not line:
            raise DataError(
                f"{path}:{lineno}: empty line; parallel files hold one sentence "
                "per line (remove the line from both files)"
            )
    return lines


def read_parallel(src_path: Path, tgt_path: Path) -> tuple[list[str], list[str]]:
    """Aligned (source lines, target lines); the files must have as many lines."""
    src, tgt = read_lines(src_path), read_lines(tgt_path)
    if len(src) != len(tgt):
        longer, shorter = (src_path, tgt_path) if len(src) > len(tgt) else (tgt_path, src_path)
        n = min(len(src), len(tgt))
        raise DataError(
            f"{longer}:{n + 1}: this line has no counterpart in {shorter.name} "
            f"({src_path} has {len(src)} lines but {tgt_path} has {len(tgt)}); "
            "parallel files must be line-aligned"
        )
    if not src:
        raise DataError(f"{src_path}: no sentences; expected one sentence per line")
    return src, tgt


class ParallelDataset(Dataset):
    """(source ids, target ids with <s> ... </s>, reference text) triples."""

    def __init__(self, src: Sequence[Tensor], tgt: Sequence[Tensor], refs: Sequence[str]):
        self.src, self.tgt, self.refs = list(src), list(tgt), list(refs)
        self.lengths = torch.tensor([len(s) for s in self.src])

    def __len__(self) -> int:
        return len(self.src)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor, str]:
        return self.src[i], self.tgt[i], self.refs[i]


def collate_parallel(items: list[tuple[Tensor, Tensor, str]], pad: int = 0) -> dict:
    """{"src": (B, S), "tgt": (B, T) padded with ``pad``, "refs": B reference strings}."""
    src, tgt, refs = zip(*items)
    return {
        "src": pad_sequence(src, batch_first=True, padding_value=pad),
        "tgt": pad_sequence(tgt, batch_first=True, padding_value=pad),
        "refs": list(refs),
    }
