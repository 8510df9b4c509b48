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
    parser.add_argument("kind", nargs="?", help=f"one of: {', '.join(registry.KINDS)}")
    parser.add_argument("pattern", nargs="?", default="*", help="glob on names, e.g. 'dot*'")
    args = parser.parse_args(argv)
    if args.kind and args.kind not in registry.KINDS:
        raise registry.UnknownPluginError(
            f"unknown plugin kind {args.kind!r}; "
            f"{registry.suggest(args.kind, list(registry.KINDS))}"
        )

    with warnings.catch_warnings():  # broken plugins are shown in the table instead
        warnings.simplefilter("ignore")
        found = registry.plugins(args.kind)
        broken = registry.broken()
    rows = []
    for p in found:
        if fnmatch.fnmatch(p.name, args.pattern):
            text = ", ".join(_describe(spec) for spec in param_specs(p) if not spec.supplied)
            text = text or "-"
            rows.append((p.kind, p.name, text, p.source))
    rows += [("broken", b.module, b.error, b.source) for b in broken]
    _print(rows)


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
