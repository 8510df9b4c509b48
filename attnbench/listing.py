"""``attnbench list [KIND] [PATTERN]``: every plugin, its parameters and its source."""

from __future__ import annotations

import argparse
import fnmatch
import warnings

from attnbench import registry
from attnbench.params import param_specs


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(
        prog="attnbench list", description="List plugins with their parameters and source."
    )
    kinds = list(registry.ALL_KINDS)
    parser.add_argument("kind", nargs="?", help=f"one of: {', '.join(kinds)}")
    parser.add_argument("pattern", nargs="?", default="*", help="glob on names, e.g. 'dot*'")
    args = parser.parse_args(argv)
    if args.kind and args.kind not in kinds:
        raise registry.UnknownPluginError(
            f"unknown plugin kind {args.kind!r}; {registry.suggest(args.kind, kinds)}"
        )

    with warnings.catch_warnings():  # broken plugins are shown in the table instead
        warnings.simplefilter("ignore")
        found = [
            p for kind in ([args.kind] if args.kind else kinds) for p in registry.plugins(kind)
        ]
        broken = registry.broken()
    rows = []
    for p in found:
        if fnmatch.fnmatch(p.name, args.pattern):
            text = _claim(p) if p.kind == "study" else _parameters(p)
            rows.append((p.kind, p.name, text, p.source))
    rows += [("broken", b.module, b.error, b.source) for b in broken]
    _print(rows)


def _parameters(plugin) -> str:
    return ", ".join(_describe(s) for s in param_specs(plugin) if not s.supplied) or "-"


def _claim(study) -> str:
    """A study takes no parameters; its claim says what it checks (`attnbench study NAME`)."""
    claim = study.cls.claim
    return claim if len(claim) <= 90 else claim[:87].rstrip() + "..."


def _describe(spec) -> str:
    """``window=8``, or ``size (int, required)`` for one the user must set."""
    if spec.required:
        return f"{spec.name} ({spec.type_name}, required)"
    return f"{spec.name}={spec.default!r}"


def _print(rows: list[tuple[str, str, str, str]]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if not console.is_terminal:  # piped: one plain line per plugin, easy to grep
        widths = [max((len(r[i]) for r in rows), default=0) for i in range(2)]
        for kind, name, params, source in rows:
            print(f"{kind:<{widths[0]}}  {name:<{widths[1]}}  {params}  [{source}]")
        return
    table = Table(box=None, pad_edge=False)
    for column in ("kind", "name", "parameters (name = default)", "source"):
        table.add_column(column, overflow="fold")
    for kind, name, params, source in rows:
        style = "red" if kind == "broken" else ""
        table.add_row(kind, name, params, source, style=style)
    console.print(table)
