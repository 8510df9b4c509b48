"""``attnbench check KIND NAME [param=value ...]``: the contract of a kind on a registered
plugin, one line per property and a summary; exit 0, 1 when a property fails, 2 for bad
input."""

from __future__ import annotations

import sys
from typing import Any

from attnbench import registry
from attnbench.config import plugin_params
from attnbench.registry import AttnbenchError
from attnbench.testing.contracts import check, plugin_kind

USAGE = "usage: attnbench check KIND NAME [param=value ...]"
HELP = f"""{USAGE}

Run the contract of a plugin kind (attention, posenc, model, task) on a registered plugin:
one line per property (PASS / FAIL with the measured error / SKIP with the reason), then a
summary. Exit status 0 when every property holds, 1 when one fails, 2 for bad input.
Parameters are the plugin's own (attention window=4); attention and posenc also take
d_model= and heads= (default 16 and 2), a model takes attention=NAME and posenc=NAME
(default: conf/config.yaml's attention and posenc), a task data_dir=PATH (default: a
temporary directory)."""
# Sizes the checker supplies (so no plugin option), settable on the command line too.
CHECKER_SIZES = {"attention": ("d_model", "heads"), "posenc": ("d_model", "heads")}


def parse_value(text: str) -> Any:
    """A command-line value as Hydra would type it: bool, null, int, float, else a string."""
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("null", "none", "~"):
        return None
    for convert in (int, float):
        try:
            return convert(text)
        except ValueError:
            pass
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    return text


def _parse_args(argv: list[str]) -> tuple[str, str, dict[str, Any]]:
    if len(argv) < 2:
        raise AttnbenchError(f"check needs a kind and a name; {USAGE}")
    kind, name = plugin_kind(argv[0]), argv[1]
    registry.get(kind, name)  # unknown names fail here, with suggestions
    raw: dict[str, Any] = {}
    for arg in argv[2:]:
        key, eq, value = arg.partition("=")
        if not eq or not key:
            raise AttnbenchError(f"expected param=value, got {arg!r}; {USAGE}")
        raw[key.removeprefix(f"{kind}.")] = parse_value(value)  # "attention.window=3" too
    sizes = {k: raw.pop(k) for k in CHECKER_SIZES.get(kind, ()) if k in raw}
    for key, value in sizes.items():
        if not (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
            raise registry.PluginParameterError(f"{key}={value!r} must be an int >= 1")
    if kind == "task" and "data_dir" in raw:
        sizes["data_dir"] = str(raw.pop("data_dir"))
    if kind == "model":  # attention=NAME / posenc=NAME pick the plugins, as in a run
        sizes.update({k: str(raw.pop(k)) for k in ("attention", "posenc") if k in raw})
    _, params = plugin_params(kind, {"_name_": name, **raw})  # names and types, as a run
    return kind, name, {**params, **sizes}


def main(argv: list[str]) -> int:
    """``attnbench check KIND NAME [param=value ...]``: one line per property, a summary;
    0 when every property holds, 1 when one fails, 2 for bad input."""
    if argv[:1] in (["-h"], ["--help"]):
        print(HELP)
        return 0
    try:
        kind, name, params = _parse_args(argv)
        checks = check(kind, name, **params)
    except AttnbenchError as e:
        print(f"attnbench: error: {str(e).splitlines()[0]}", file=sys.stderr)
        return 2
    for c in checks:
        print(c)
    counts = {s: sum(c.status == s for c in checks) for s in ("pass", "fail", "skip")}
    print(
        f"{kind} {name!r}: {counts['pass']} passed, {counts['fail']} failed, "
        f"{counts['skip']} skipped"
    )
    return 1 if counts["fail"] else 0
