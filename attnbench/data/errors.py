"""The error every data reader raises: one line naming the file (and line) and the fix."""

from __future__ import annotations

from attnbench.registry import AttnbenchError


class DataError(AttnbenchError):
    """Bad or missing data: the message names the file (and line) and the fix."""


def one_line(error: BaseException) -> str:
    """An exception's text on one line (library messages may span several)."""
    return " ".join(str(error).split()) or type(error).__name__
