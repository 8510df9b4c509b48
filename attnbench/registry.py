"""Plugin registry: one decorator registers a plugin; discovery is lazy.

Sources, searched the first time a name is needed (never at ``import attnbench``):
  * the entry-point group ``attnbench.plugins`` (attnbench's own built-in plugins are one
    such entry point, so they are found exactly as a third party's are);
  * directories listed in ``ATTNBENCH_PLUGIN_PATH`` (os.pathsep-separated): every ``*.py``
    file in them and their subfolders, except those in a file or folder whose name starts
    with ``.`` or ``_`` (hidden, private, ``__pycache__``).

A plugin module that raises anything at import, ``SystemExit`` included, is recorded as
broken (shown by ``attnbench list``) and the others still load.

Importing this module must stay cheap: no torch, no plugin.
"""

from __future__ import annotations

import contextlib
import difflib
import hashlib
import importlib
import importlib.metadata
import importlib.util
import inspect
import io
import os
import pkgutil
import sys
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

KINDS = ("attention", "posenc", "model", "task")  # the plugins a run composes
# Studies are plugins too, but no run selects one: no config group, not in KINDS
# (``attnbench study list`` names them).
ALL_KINDS = (*KINDS, "study")
ENTRY_POINT_GROUP = "attnbench.plugins"
PATH_ENV = "ATTNBENCH_PLUGIN_PATH"


class AttnbenchError(Exception):
    """A user-facing error: the CLI prints its one-line message and exits with status 2."""


class UnknownPluginError(AttnbenchError, LookupError):
    pass


class DuplicatePluginError(AttnbenchError):
    pass


class PluginParameterError(AttnbenchError, TypeError):
    pass


class ConfigError(AttnbenchError, ValueError):
    """A parameter value a plugin cannot work with."""


def one_line(e: BaseException) -> str:
    """An exception as one short line (its type and first line) for a table or a log."""
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:200]}" if text else type(e).__name__


class PluginContractError(AttnbenchError, TypeError):
    """A registered class that does not subclass its kind's base class."""


# The base class each kind's plugins subclass, imported only when a plugin registers (the
# plugin has imported torch by then): "module:attribute", also exported by ``attnbench``.
BASES = {
    "attention": "attnbench.nn.attention:Attention",
    "posenc": "attnbench.nn.posenc:PositionalEncoding",
    "model": "attnbench.nn.backbone:Backbone",
    "task": "attnbench.task:Task",
    "study": "attnbench.study.plugin:Study",
}


def base_class(kind: str) -> type:
    module, _, attr = BASES[kind].partition(":")
    return getattr(importlib.import_module(module), attr)


def _check_base(kind: str, name: str, cls: Any) -> None:
    """Refuse a class that does not subclass its kind's base: one line naming the file,
    the class and the base to subclass (checked here, not when a run is half-way)."""
    base = base_class(kind)
    if inspect.isclass(cls) and issubclass(cls, base):
        return
    label = getattr(cls, "__qualname__", repr(cls))
    try:
        where = f"{inspect.getsourcefile(cls)}: "
    except TypeError:
        where = ""
    raise PluginContractError(
        f"{where}{label} is registered as {kind} {name!r} but does not subclass "
        f"attnbench.{base.__name__}; declare it as `class {label}(attnbench.{base.__name__})`"
    )


@dataclass(frozen=True)
class Param:
    name: str
    default: Any  # inspect.Parameter.empty when the harness must supply it
    annotation: Any = None

    @property
    def required(self) -> bool:
        return self.default is inspect.Parameter.empty


@dataclass
class Plugin:
    kind: str
    name: str
    cls: type
    source: str  # "built-in", "entry point <dist>:<name>", "path <dir>" or "code <module>"

    @property
    def params(self) -> list[Param]:
        """Constructor parameters, in order (``self`` and ``*args/**kwargs`` left out)."""
        sig = inspect.signature(self.cls)
        return [
            Param(p.name, p.default, p.annotation)
            for p in sig.parameters.values()
            if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        ]

    @property
    def options(self) -> dict[str, Any]:
        """The parameters a user may set: those with a default."""
        return {p.name: p.default for p in self.params if not p.required}

    @property
    def doc(self) -> str:
        return (inspect.getdoc(self.cls) or "").split("\n")[0]


@dataclass
class Broken:
    module: str
    source: str
    error: str


@dataclass
class _State:
    plugins: dict[str, dict[str, Plugin]] = field(
        default_factory=lambda: {k: {} for k in ALL_KINDS}
    )
    duplicates: dict[tuple[str, str], DuplicatePluginError] = field(default_factory=dict)
    broken: list[Broken] = field(default_factory=list)
    discovered: bool = False
    source: str | None = None  # the source being imported right now
    modules: list[str] = field(default_factory=list)  # imported by discovery


_state = _State()


def _check_kind(kind: str) -> None:
    if kind not in ALL_KINDS:
        raise UnknownPluginError(f"unknown plugin kind {kind!r}; kinds are: {', '.join(ALL_KINDS)}")


def register(kind: str, name: str):
    """Class decorator: ``@attnbench.register("attention", "dot")``.

    The class's constructor signature becomes its config node: every parameter with a
    default is settable on the command line (``attention.window=8``).
    """
    _check_kind(kind)

    def decorator(cls: type) -> type:
        try:
            _check_base(kind, name, cls)
        except PluginContractError as e:
            if _state.source is None:  # a direct call: fail right here
                raise
            # while discovering: this class is broken, the file's other plugins still load
            where = inspect.getsourcefile(cls) if inspect.isclass(cls) else None
            label = where or getattr(cls, "__module__", repr(cls))
            _state.broken.append(Broken(label, _state.source, f"{type(e).__name__}: {e}"))
            warnings.warn(
                f"attnbench: plugin {kind} {name!r} ({_state.source}) is refused: {e}", stacklevel=2
            )
            return cls
        source = _state.source or f"code {cls.__module__}"
        table = _state.plugins[kind]
        if name in table:
            err = DuplicatePluginError(
                f"duplicate {kind} {name!r}: registered by {table[name].source} "
                f"and again by {source}; rename one of them"
            )
            if _state.source is None:  # a direct call: fail right here
                raise err
            _state.duplicates[(kind, name)] = err
            raise err
        table[name] = Plugin(kind, name, cls, source)
        cls.plugin_name = name
        return cls

    return decorator


# ----------------------------------------------------------------------------- discovery


@contextlib.contextmanager
def _importing(source: str) -> Iterator[None]:
    previous, _state.source = _state.source, source
    try:
        yield
    finally:
        _state.source = previous


def _import_guarded(label: str, source: str, load) -> Any:
    """Import one plugin module; a failure is recorded and warned about, never raised.

    What the module prints while importing is held back: `attnbench list`'s stdout stays
    clean, and a plugin that parses arguments at import (argparse prints its usage and
    "attnbench: error: ..." under our program name, then exits) cannot pass its message off
    as ours. A module that imports passes its output on to stderr; one that fails has the
    last line it printed folded into its one-line error."""
    printed = io.StringIO()
    try:
        with (
            _importing(source),
            contextlib.redirect_stdout(printed),
            contextlib.redirect_stderr(printed),
        ):
            module = load()
    except (Exception, SystemExit) as e:  # a broken plugin must not take the others down
        msg = _failure_line(e, printed.getvalue())
        _state.broken.append(Broken(label, source, msg))
        file, line = _failing_line(e, label)
        # pointed at the plugin's own line (not ours): one warning per broken plugin
        warnings.warn_explicit(
            f"attnbench: plugin {label} ({source}) failed to import: {msg}",
            UserWarning,
            file,
            line,
        )
        return None
    sys.stderr.write(printed.getvalue())
    return module


def _failure_line(e: BaseException, printed: str) -> str:
    """``Type: message`` on one line, plus what the module printed last when it exited
    (``SystemExit: 2`` alone does not say why)."""
    text = " ".join(str(e).split())
    msg = f"{type(e).__name__}: {text}" if text else type(e).__name__
    last = [ln.strip() for ln in printed.splitlines() if ln.strip()]
    if isinstance(e, SystemExit) and last:
        # argparse signs its message with our program name: "attnbench: error: ..."
        said = last[-1].removeprefix(f"{Path(sys.argv[0]).name}: ")
        msg += f" (it printed: {said[:200]})"
    return msg


def _failing_line(e: BaseException, label: str) -> tuple[str, int]:
    """The plugin file and line that raised: the deepest frame in the plugin's own file,
    else the deepest frame outside Python's import machinery."""
    frames = []
    tb = e.__traceback__
    while tb is not None:
        frames.append((tb.tb_frame.f_code.co_filename, tb.tb_lineno))
        tb = tb.tb_next
    own = [f for f in frames if f[0] == label or Path(f[0]).stem == label.rsplit(".", 1)[-1]]
    outside = [f for f in frames if not f[0].startswith("<frozen") and f[0] != __file__]
    return (own or outside or [(label, 0)])[-1]


BUILTIN = "attnbench.plugins"  # the built-in plugins' package (also an entry point)


def _walk(value: str, source: str, load) -> None:
    """Import one entry point's module and, for a package, every plugin file inside it."""
    module = _import_guarded(value, source, load)
    _state.modules.append(value)
    if module is None or not hasattr(module, "__path__"):
        return
    _state.modules.append(module.__name__)
    for info in pkgutil.walk_packages(module.__path__, module.__name__ + "."):
        if not info.name.rsplit(".", 1)[-1].startswith("_"):
            _state.modules.append(info.name)
            _import_guarded(info.name, source, lambda n=info.name: importlib.import_module(n))


def _discover_entry_points() -> None:
    found_builtin = False
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        dist = ep.dist.name if ep.dist is not None else "?"
        builtin = dist == "attnbench" and ep.value == BUILTIN
        if builtin and found_builtin:
            continue  # the same distribution seen twice on sys.path
        found_builtin |= builtin
        _walk(ep.value, "built-in" if builtin else f"entry point {dist}:{ep.name}", ep.load)
    if not found_builtin:  # a source checkout that was never installed
        _walk(BUILTIN, "built-in", lambda: importlib.import_module(BUILTIN))


def _load_file(path: Path):
    digest = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:10]
    module_name = f"attnbench_path_plugins.{path.stem}_{digest}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(module_name, None)
        raise
    return module


def _discover_paths() -> None:
    for entry in os.environ.get(PATH_ENV, "").split(os.pathsep):
        if not entry:
            continue
        root = Path(entry).expanduser()
        if not root.is_dir():
            warnings.warn(
                f"attnbench: {PATH_ENV} entry {entry!r} is not a directory; skipped", stacklevel=2
            )
            continue
        for path in sorted(root.rglob("*.py")):
            # hidden and private files and folders (.git, .venv, __pycache__, _drafts) are skipped
            if not any(part.startswith(("_", ".")) for part in path.relative_to(root).parts):
                _import_guarded(str(path), f"path {root}", lambda p=path: _load_file(p))


def discover(force: bool = False) -> None:
    """Import every plugin module once. ``force=True`` forgets everything found so far."""
    global _state
    if force:  # forget, and re-import so every module registers again
        for name in _state.modules:
            sys.modules.pop(name, None)
        _state = _State()
    if _state.discovered:
        return
    _state.discovered = True
    _discover_entry_points()
    _discover_paths()


# ----------------------------------------------------------------------------- lookups


def available(kind: str | None = None) -> dict[str, list[str]] | list[str]:
    """Registered names: a sorted list for one kind, or ``{kind: [names]}`` for all."""
    discover()
    if kind is None:
        return {k: sorted(_state.plugins[k]) for k in KINDS}
    _check_kind(kind)
    return sorted(_state.plugins[kind])


def plugins(kind: str | None = None) -> list[Plugin]:
    discover()
    kinds = KINDS if kind is None else (kind,)
    for k in kinds:
        _check_kind(k)
    return [p for k in kinds for _, p in sorted(_state.plugins[k].items())]


def broken() -> list[Broken]:
    discover()
    return list(_state.broken)


def suggest(word: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=3, cutoff=0.5)
    hint = f"did you mean {' or '.join(repr(c) for c in close)}? " if close else ""
    return f"{hint}available: {', '.join(choices) or '(none)'}"


def get(kind: str, name: str) -> Plugin:
    """The plugin registered as ``name`` for ``kind``, or a one-line error with suggestions."""
    _check_kind(kind)
    discover()
    if (kind, name) in _state.duplicates:
        raise _state.duplicates[(kind, name)]
    table = _state.plugins[kind]
    if name not in table:
        broken_hint = "".join(
            f" ({b.module} is broken: {b.error})"
            for b in _state.broken
            if Path(b.module).stem == name
            or b.module.rsplit(".", 1)[-1] == name
            or f"registered as {kind} {name!r}" in b.error
        )
        raise UnknownPluginError(
            f"unknown {kind} {name!r}{broken_hint}; {suggest(name, sorted(table))}"
        )
    return table[name]


def build(kind: str, name: str, /, **params: Any) -> Any:
    """Instantiate a registered plugin; unknown parameters fail with the allowed names."""
    plugin = get(kind, name)
    names = {p.name for p in plugin.params}
    unknown = [k for k in params if k not in names]
    if unknown:
        allowed = sorted(names)
        raise PluginParameterError(
            f"{kind} {name!r} has no parameter {unknown[0]!r}; "
            f"{suggest(unknown[0], allowed).replace('available', 'allowed')}"
        )
    missing = [p.name for p in plugin.params if p.required and p.name not in params]
    if missing:
        raise PluginParameterError(f"{kind} {name!r} needs {', '.join(missing)}")
    return plugin.cls(**params)


def factory(kind: str, name: str, /, **params: Any):
    """A builder for a plugin whose sizes the caller supplies later: ``make(d_model=..,
    heads=..)``. Supplied sizes the plugin does not declare are dropped, so a backbone can
    offer ``heads`` to every positional encoding and only those that use it take it."""
    plugin = get(kind, name)
    takes = {p.name for p in plugin.params}

    def make(**supplied: Any) -> Any:
        return build(kind, name, **params, **{k: v for k, v in supplied.items() if k in takes})

    return make
