"""Each kind's contract by name: run it on a registered plugin or a class, assert it in a
test suite, and pick out what failed."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from attnbench import registry
from attnbench.testing._core import Check
from attnbench.testing.attention import check_attention
from attnbench.testing.backbone import check_backbone
from attnbench.testing.posenc import check_posenc
from attnbench.testing.task import check_task

CHECKERS: dict[str, Callable[..., list[Check]]] = {
    "attention": check_attention,
    "posenc": check_posenc,
    "model": check_backbone,
    "task": check_task,
}
ALIASES = {"backbone": "model"}


def plugin_kind(kind: str) -> str:
    """The registry's name of a kind (``backbone`` is ``model``); an unknown kind is bad
    input, with a suggestion."""
    kind = ALIASES.get(kind, kind)
    if kind not in CHECKERS:
        raise registry.UnknownPluginError(
            f"unknown plugin kind {kind!r}; {registry.suggest(kind, list(CHECKERS))}"
        )
    return kind


def check(kind: str, name: str, **params: Any) -> list[Check]:
    """The contract of ``kind`` on the plugin registered as ``name``."""
    kind = plugin_kind(kind)
    return CHECKERS[kind](registry.get(kind, name).cls, **params)


def assert_conforms(kind: str, cls_or_name: type | str, **params: Any) -> list[Check]:
    """For a test suite: raise AssertionError listing every failed property."""
    kind = plugin_kind(kind)
    if isinstance(cls_or_name, str):
        checks = check(kind, cls_or_name, **params)
    else:
        checks = CHECKERS[kind](cls_or_name, **params)
    failed = [c for c in checks if not c.ok]
    if failed:
        label = cls_or_name if isinstance(cls_or_name, str) else cls_or_name.__name__
        lines = "\n".join(str(c) for c in failed)
        raise AssertionError(f"{kind} {label} breaks its contract:\n{lines}")
    return checks


def failed(checks: list[Check]) -> dict[str, str]:
    """{property: detail} of the failed checks (handy in assertions)."""
    return {c.name: c.detail for c in checks if c.status == "fail"}
