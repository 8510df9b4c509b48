"""Plugin parameters typed from their constructor's annotations, with declared ranges.

A plugin states a range through ``typing.Annotated``::

    window: Annotated[int, Range(min=0)] = 8
    dropout: Annotated[float, Range(min=0, max=1, max_open=True)] = 0.1

A parameter whose plugin states no range gets the conventional one for its name
(:data:`CONVENTIONS`), so a third-party plugin's ``heads=0`` is refused like a built-in's;
``Annotated[int, Range()]`` opts out. Annotations that say nothing checkable (``Any``,
``Callable``, a class) leave the value unchecked.

Cheap to import: no torch, no Hydra.
"""

from __future__ import annotations

import enum
import functools
import inspect
import math
import operator
import re
import types
import typing
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from attnbench.registry import Plugin

REQUIRED = inspect.Parameter.empty  # the default of a parameter that has none
_NONE = type(None)
_NUMBERS = (int, float)


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(value)


@dataclass(frozen=True)
class Range:
    """Bounds on a numeric parameter; ``min_open``/``max_open`` exclude the bound itself."""

    min: float | None = None
    max: float | None = None
    min_open: bool = False
    max_open: bool = False

    def __contains__(self, value: float) -> bool:
        if not math.isfinite(value):  # NaN compares false to every bound; inf is no size
            return False
        if self.min is not None and (value <= self.min if self.min_open else value < self.min):
            return False
        return self.max is None or (value < self.max if self.max_open else value <= self.max)

    @property
    def bounds(self) -> str:
        """'>= 0', '> 1', '<= 8', 'in [0, 1)'; empty when unbounded."""
        if self.min is not None and self.max is not None:
            left, right = "(" if self.min_open else "[", ")" if self.max_open else "]"
            return f"in {left}{_number(self.min)}, {_number(self.max)}{right}"
        if self.min is not None:
            return f"{'>' if self.min_open else '>='} {_number(self.min)}"
        if self.max is not None:
            return f"{'<' if self.max_open else '<='} {_number(self.max)}"
        return ""

    def describe(self) -> str:
        return f"must be {self.bounds}" if self.bounds else "any value"


# Ranges by parameter name, for plugins that state none. Only names whose meaning is
# unambiguous across plugins: sizes and counts that cannot be zero, counts where zero means
# "none/off", and a dropout probability (1 would drop everything).
_AT_LEAST_ONE = Range(min=1)
_AT_LEAST_ZERO = Range(min=0)
CONVENTIONS: dict[str, Range] = {
    "d_model": _AT_LEAST_ONE,
    "heads": _AT_LEAST_ONE,
    "layers": _AT_LEAST_ONE,
    "ff_mult": _AT_LEAST_ONE,
    "hidden": _AT_LEAST_ONE,
    "kernel_size": _AT_LEAST_ONE,
    "dilation": _AT_LEAST_ONE,
    "max_len": _AT_LEAST_ONE,
    "max_distance": _AT_LEAST_ONE,
    "batch_size": _AT_LEAST_ONE,
    "window": _AT_LEAST_ZERO,  # 0: each query sees only its own position
    "chunk_size": _AT_LEAST_ZERO,  # 0: no chunking
    "num_workers": _AT_LEAST_ZERO,  # 0: load in the main process
    "dropout": Range(min=0, max=1, max_open=True),
}

# Parameters the harness passes to each kind (never in the config node), and where the user
# sets them instead.
SUPPLIED: dict[str, dict[str, str]] = {
    "attention": {"d_model": "model.d_model", "heads": "model.heads"},
    "posenc": {"d_model": "model.d_model", "heads": "model.heads"},
    "model": {"task": "task=NAME", "attention": "attention=NAME", "posenc": "posenc=NAME"},
    "task": {"data_dir": "data_dir=PATH"},
}


@dataclass(frozen=True)
class ParamSpec:
    """One constructor parameter of a plugin, as the config checks see it."""

    name: str
    type: Any  # the resolved annotation without Annotated's extras; None: unchecked
    range: Range | None
    default: Any  # REQUIRED when the parameter has none
    supplied: bool  # passed by the harness, never set by the user

    @property
    def required(self) -> bool:
        return self.default is REQUIRED

    @property
    def nullable(self) -> bool:
        members = _members(self.type)
        literal_none = any(None in _choices(m) for m in members)
        return self.default is None or _NONE in members or literal_none

    @property
    def choices(self) -> tuple[Any, ...] | None:
        """The allowed values of a ``Literal`` or ``Enum`` annotation (None stays separate)."""
        values = [v for m in _members(self.type) for v in _choices(m)]
        return tuple(v for v in values if v is not None) or None

    @property
    def type_name(self) -> str:
        """The annotation as a user reads it: 'int', 'float | None', "'pre' | 'post'"."""
        if self.type is None:
            return "any"
        names = [_name(m) for m in _members(self.type)]
        if self.default is None and "None" not in names:
            names.append("None")
        return " | ".join(dict.fromkeys(names))

    def allowed(self) -> str:
        """What this parameter accepts, in words: 'an int >= 1 or null'."""
        if self.type is None:
            return f"a value {self.range.bounds}" if self.range and self.range.bounds else "any"
        parts = [_describe(m, self.range) for m in _members(self.type) if m is not _NONE]
        if self.nullable:
            parts.append("null")
        return " or ".join(dict.fromkeys(parts))

    def check(self, value: Any) -> Any:
        """The value as the plugin should get it (an int becomes a float for a float
        parameter), or :class:`BadValue` when the annotation or range refuses it."""
        if value is None:
            if self.nullable or self.type is None:
                return None
            raise BadValue("has the wrong type", self.allowed())
        if self.type is None:
            return _in_range(value, self.range, self)
        for member in _members(self.type):
            if _accepts(member, value):
                if member is float and isinstance(value, int):
                    value = float(value)
                return _in_range(value, self.range, self) if member in _NUMBERS else value
        reason = "is not one of the choices" if self.choices else "has the wrong type"
        raise BadValue(reason, self.allowed())


class BadValue(ValueError):
    """A value the parameter does not take: why ("is out of range") and what it takes."""

    def __init__(self, reason: str, allowed: str):
        super().__init__(f"{reason}; allowed: {allowed}")
        self.reason, self.allowed = reason, allowed


def _in_range(value: Any, bounds: Range | None, spec: ParamSpec) -> Any:
    is_number = isinstance(value, _NUMBERS) and not isinstance(value, bool)
    if bounds is not None and is_number and value not in bounds:
        raise BadValue("is out of range", spec.allowed())
    return value


# ----------------------------------------------------------------------------- annotations


def _members(tp: Any) -> tuple[Any, ...]:
    """The alternatives of a union (``X | None``, ``Optional[X]``), else the type itself."""
    if tp is None:
        return ()
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return typing.get_args(tp)
    return (tp,)


def _is_enum(tp: Any) -> bool:
    return inspect.isclass(tp) and issubclass(tp, enum.Enum)


def _choices(tp: Any) -> tuple[Any, ...]:
    if typing.get_origin(tp) is typing.Literal:
        return typing.get_args(tp)
    if _is_enum(tp):
        return tuple(m.value for m in tp)
    return ()


def _accepts(tp: Any, value: Any) -> bool:
    """Whether ``value`` (as Hydra's parser typed it) fits ``tp``; True when ``tp`` is
    nothing this checker understands."""
    if tp is _NONE:
        return value is None
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:  # an int is a float (Hydra parses `1` as an int)
        return isinstance(value, _NUMBERS) and not isinstance(value, bool)
    if tp is str:
        return isinstance(value, str)
    if typing.get_origin(tp) is typing.Literal or _is_enum(tp):
        return any(value == c and type(value) is type(c) for c in _choices(tp))
    origin = typing.get_origin(tp)
    if origin in (list, tuple):
        args = [a for a in typing.get_args(tp) if a is not Ellipsis]
        if not isinstance(value, (list, tuple)):
            return False
        if origin is list or (len(args) == 1 and Ellipsis in typing.get_args(tp)):
            return not args or all(_accepts(args[0], v) for v in value)
        return len(args) == len(value) and all(map(_accepts, args, value))
    return True


def _name(tp: Any) -> str:
    if tp is _NONE:
        return "None"
    if typing.get_origin(tp) is typing.Literal or _is_enum(tp):
        return " | ".join(repr(c) for c in _choices(tp))
    if inspect.isclass(tp) and typing.get_origin(tp) is None:
        return tp.__name__
    return re.sub(r"\b(?:\w+\.)+(\w)", r"\1", str(tp))  # typing.Callable -> Callable


def _describe(tp: Any, bounds: Range | None) -> str:
    if tp is bool:
        return "true or false"
    if tp in _NUMBERS:
        article = "an" if tp is int else "a"
        tail = f" {bounds.bounds}" if bounds is not None and bounds.bounds else ""
        return f"{article} {tp.__name__}{tail}"
    if tp is str:
        return "a string"
    if _choices(tp):
        return "one of " + ", ".join(repr(c) for c in _choices(tp))
    if typing.get_origin(tp) in (list, tuple):
        return f"a list ({_name(tp)})"
    return _name(tp)


def _split_annotated(tp: Any) -> tuple[Any, Range | None]:
    """``Annotated[int, Range(min=0)]`` -> (int, Range(min=0)), also inside a union
    (``Annotated[int, Range(min=1)] | None``); the last Range wins."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        split = [_split_annotated(m) for m in typing.get_args(tp)]
        ranges = [r for _, r in split if r is not None]
        return functools.reduce(operator.or_, (m for m, _ in split)), (
            ranges[-1] if ranges else None
        )
    if typing.get_origin(tp) is not typing.Annotated:
        return tp, None
    ranges = [m for m in tp.__metadata__ if isinstance(m, Range)]
    return tp.__origin__, (ranges[-1] if ranges else None)


def _type_hints(cls: type) -> dict[str, Any]:
    """The constructor's annotations, evaluated (plugins use ``from __future__ import
    annotations``); one that cannot be evaluated is left out rather than failing all."""
    init = cls.__init__
    try:
        return typing.get_type_hints(init, include_extras=True)
    except Exception:  # e.g. a name imported only under TYPE_CHECKING
        pass
    hints = {}
    namespace = getattr(init, "__globals__", {})
    for name, annotation in getattr(init, "__annotations__", {}).items():
        try:
            hints[name] = eval(annotation, namespace) if isinstance(annotation, str) else annotation
        except Exception:
            continue
    return hints


def _default_type(default: Any) -> Any:
    """An unannotated (or unresolvable) parameter is typed by its default, as before."""
    return type(default) if type(default) in (bool, int, float, str) else None


def param_specs(plugin: Plugin) -> list[ParamSpec]:
    """Every constructor parameter of ``plugin``, typed, ranged, and marked supplied when the
    harness passes it."""
    try:
        hints = _type_hints(plugin.cls)
    except Exception:  # a constructor without __globals__ (a C type, a callable object)
        hints = {}
    supplied = SUPPLIED.get(plugin.kind, {})
    specs = []
    for param in plugin.params:
        if param.name in hints:
            tp, bounds = _split_annotated(hints[param.name])
            if tp is Any:
                tp = None
        else:
            tp, bounds = _default_type(param.default), None
        if bounds is None:
            bounds = CONVENTIONS.get(param.name)
        specs.append(ParamSpec(param.name, tp, bounds, param.default, param.name in supplied))
    return specs
