"""CoNLL-U reader for tagging: (forms, UPOS tags) per sentence.

Comment lines (``#``), multiword-token ranges (``3-4``) and empty nodes (``5.1``) are
skipped: they are not words of the sentence. Anything else that is not a 10-column
token line with the next integer id raises a DataError naming file:line.
"""

from __future__ import annotations

import re
from pathlib import Path

from attnbench.data.text import DataError, open_text

# The 17 universal POS tags (https://universaldependencies.org/u/pos/).
UPOS = (
    "ADJ",
    "ADP",
    "ADV",
    "AUX",
    "CCONJ",
    "DET",
    "INTJ",
    "NOUN",
    "NUM",
    "PART",
    "PRON",
    "PROPN",
    "PUNCT",
    "SCONJ",
    "SYM",
    "VERB",
    "X",
)
_UPOS = frozenset(UPOS)
_SKIPPED_ID = re.compile(r"\d+-\d+|\d+\.\d+")  # multiword range | empty node

Sentence = tuple[list[str], list[str]]


def read_conllu(path: Path) -> list[Sentence]:
    """Sentences of ``path`` (plain or .gz) as (forms, upos) lists."""
    sentences: list[Sentence] = []
    forms: list[str] = []
    tags: list[str] = []
    lineno = 0
    with open_text(path) as f:
        for lineno, line in enumerate(f, start=1):
            line = line.rstrip("\r\n")
            if not line.strip():  # a blank line ends the sentence
                if forms:
                    sentences.append((forms, tags))
                    forms, tags = [], []
                continue
            if line.startswith("#"):
                continue
            cols = line.split("\t")
            if len(cols) != 10:
                raise DataError(
                    f"{path}:{lineno}: expected 10 tab-separated CoNLL-U columns "
                    f"(ID FORM LEMMA UPOS ...), got {len(cols)}"
                )
            wid, form, upos = cols[0], cols[1], cols[3]
            if _SKIPPED_ID.fullmatch(wid):
                continue
            if not wid.isdigit() or int(wid) != len(forms) + 1:
                raise DataError(
                    f"{path}:{lineno}: word id {wid!r}, expected {len(forms) + 1} "
                    "(ids count 1, 2, ... within a sentence; blank line between "
                    "sentences)"
                )
            if upos not in _UPOS:
                raise DataError(
                    f"{path}:{lineno}: UPOS {upos!r} (column 4) is not a universal "
                    f"POS tag; expected one of {' '.join(UPOS)}"
                )
            if not form:
                raise DataError(f"{path}:{lineno}: empty FORM (column 2)")
            forms.append(form)
            tags.append(upos)
    if forms:  # the last sentence need not end with a blank line
        sentences.append((forms, tags))
    if not sentences:
        what = "is empty" if lineno == 0 else "has no token lines"
        raise DataError(
            f"{path}: {what}; expected CoNLL-U sentences (10-column token lines, "
            "a blank line after each sentence)"
        )
    return sentences
