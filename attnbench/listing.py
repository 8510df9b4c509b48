"""``attnbench list [KIND] [PATTERN]``: every plugin, its parameters and its source."""

from __future__ import annotations

import argparse
import fnmatch
import warnings

from attnbench import registry
from attnbench.config import plugin_node


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(
        prog="attnbench list", description="List plugins with their parameters and source.")
    parser.add_argument("kind", nargs="?", help=f"one of: {', '.join(registry.KINDS)}")
    parser.add_argument("pattern", nargs="?", default="*", help="glob on names, e.g. 'dot*'")
    args = parser.parse_args(argv)
    if args.kind and args.kind not in registry.KINDS:
        raise registry.UnknownPluginError(
            f"unknown plugin kind {args.kind!r}; "
            f"{registry.suggest(args.kind, list(registry.KINDS))}")

    from rich.console import Console
    from rich.table import Table

    with warnings.catch_warnings():  # broken plugins are shown in the table instead
        warnings.simplefilter("ignore")
        found = registry.plugins(args.kind)
        broken = registry.broken()
    table = Table(box=None, pad_edge=False)
    for column in ("kind", "name", "parameters (name = default)", "source"):
        table.add_column(column, overflow="fold")
    for p in found:
        if fnmatch.fnmatch(p.name, args.pattern):
            params = {k: v for k, v in plugin_node(p).items() if k != "_name_"}
            text = ", ".join(f"{k}={v!r}" for k, v in params.items()) or "-"
            table.add_row(p.kind, p.name, text, p.source)
    for b in broken:
        table.add_row("[red]broken[/]", b.module, f"[red]{b.error}[/]", b.source)
    Console(soft_wrap=False).print(table)
