"""What every kind's contract shares: a property's outcome (:class:`Check`), running
properties so that any error is that property's failure and never the checker's, the
comparisons and tolerances they measure with, and building the plugin under test."""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import torch
from torch import Tensor, nn

from attnbench import registry
from attnbench.registry import AttnbenchError

Status = Literal["pass", "fail", "skip"]

B, N, D, HEADS = 2, 5, 16, 2  # batch, tokens, d_model, heads of every check
EXACT = 1e-9  # float64: "the same computation, up to rounding"
SEED = 0

# (name, run it): the run returns a detail, or raises Failed or Skipped
Property = tuple[str, Callable[[], str]]
# properties that back-propagate; the others run without autograd
GRAD_PROPERTIES = ("gradients", "loss")

Subject = TypeVar("Subject")


@dataclass(frozen=True)
class Check:
    """One property's outcome; ``detail`` is the measured error or the reason for a skip."""

    name: str
    status: Status
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.status != "fail"

    def __str__(self) -> str:
        return f"{self.status.upper():<5} {self.name:<24} {self.detail}".rstrip()


class Failed(Exception):
    """A property does not hold; the message says by how much."""


class Skipped(Exception):
    """A property does not apply; the message says why."""


def one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:200] if text else ''}".rstrip(": ")


# ----------------------------------------------------------------------------- running


def run_one(name: str, prop: Callable[[], str]) -> Check:
    """Run one property; any exception is that property's failure, never the checker's."""
    try:
        with torch.set_grad_enabled(name in GRAD_PROPERTIES):
            detail = prop()
        return Check(name, "pass", detail)
    except Skipped as s:
        return Check(name, "skip", str(s))
    except Failed as f:
        return Check(name, "fail", str(f))
    except Exception as e:
        return Check(name, "fail", f"raised {one_line(e)}")


def run_all(
    build: Callable[[], Subject], properties: Callable[[Subject], list[Property]]
) -> list[Check]:
    """Build once (a one-line AttnbenchError means bad parameters and is raised; any other
    error fails the "build" property), then run every property of what was built. The
    caller's random state is left as it was (the checker seeds its own builds)."""
    with torch.random.fork_rng(devices=[]):
        try:
            subject = build()
        except AttnbenchError:
            raise
        except Exception as e:
            return [Check("build", "fail", f"the constructor raised {one_line(e)}")]
        return [run_one(name, prop) for name, prop in properties(subject)]


# ----------------------------------------------------------------------------- measuring


def diff(a: Tensor, b: Tensor) -> float:
    """max |a - b| in float64; NaN counts as infinitely far."""
    if a.shape != b.shape:
        raise Failed(f"shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}")
    err = float((a.double() - b.double()).abs().max()) if a.numel() else 0.0
    return math.inf if math.isnan(err) else err  # NaN must not vanish inside max()


def assert_close(a: Tensor, b: Tensor, what: str, tol: float = EXACT) -> str:
    err = diff(a, b)
    if not err <= tol:  # also catches NaN
        raise Failed(f"{what}: max |Δ| {err:.1e} > {tol:.0e}")
    return f"max |Δ| {err:.1e}"


def assert_within(worst: float, what: str, tol: float = EXACT) -> str:
    """A worst case measured over several comparisons, at most ``tol``."""
    if not worst <= tol:
        raise Failed(f"{what}: max |Δ| {worst:.1e}")
    return f"max |Δ| {worst:.1e}"


def assert_shape(t: Any, expected: tuple[int, ...], what: str) -> None:
    if not isinstance(t, Tensor):
        raise Failed(f"{what} is {type(t).__name__}, not a tensor")
    if tuple(t.shape) != expected:
        raise Failed(f"{what} has shape {tuple(t.shape)}, expected {expected}")


def assert_finite(t: Tensor, what: str) -> None:
    if not torch.isfinite(t).all():
        raise Failed(f"{what} has {int((~torch.isfinite(t)).sum())} non-finite values")


def assert_output(t: Any, expected: tuple[int, ...], what: str) -> None:
    """A tensor of the expected shape with finite values."""
    assert_shape(t, expected, what)
    assert_finite(t, what)


# ----------------------------------------------------------------------------- building


def takes(cls: type, name: str) -> bool:
    """Whether cls's constructor accepts the keyword ``name``."""
    try:
        params = inspect.signature(cls).parameters
    except (TypeError, ValueError):
        return False
    var_kw = any(p.kind is p.VAR_KEYWORD for p in params.values())
    return name in params or var_kw


def construct(kind: str, cls: type, supplied: dict[str, Any], params: dict[str, Any]) -> Any:
    """cls(**the supplied sizes/factories it takes, **params); a required parameter that
    nobody gives is bad input (PluginParameterError), as in registry.build."""
    kwargs = {k: v for k, v in supplied.items() if takes(cls, k)}
    kwargs.update(params)
    try:
        sig = inspect.signature(cls)
    except (TypeError, ValueError):
        sig = None
    if sig is not None:
        missing = [
            p.name
            for p in sig.parameters.values()
            if p.default is p.empty
            and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
            and p.name not in kwargs
        ]
        if missing:
            raise registry.PluginParameterError(
                f"{kind} {cls.__name__} needs {', '.join(missing)}; pass them as name=value"
            )
    return cls(**kwargs)


def seeded(make: Callable[[], Subject]) -> Subject:
    torch.manual_seed(SEED)
    return make()


def build_module(
    kind: str, cls: type, supplied: dict[str, Any], params: dict[str, Any]
) -> nn.Module:
    """The plugin as the checker measures it: seeded, in float64 (exactness checks), eval."""
    return seeded(lambda: construct(kind, cls, supplied, params)).double().eval()


def sizes(params: dict[str, Any]) -> tuple[int, int]:
    """(d_model, heads) taken out of params: the checker supplies them, unless given."""
    return int(params.pop("d_model", D)), int(params.pop("heads", HEADS))
