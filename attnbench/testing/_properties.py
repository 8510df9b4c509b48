"""Properties that more than one kind's contract holds its plugins to: the base class, the
fail-closed refusal of an undeclared capability, finite gradients, reproducibility,
permutation equivariance over graphs and invariance to padding."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from attnbench.registry import ConfigError
from attnbench.testing._core import (
    Failed,
    Property,
    Skipped,
    assert_close,
    assert_finite,
    assert_within,
    diff,
    one_line,
)
from attnbench.testing._inputs import lengths_mask, pad_to, randn


def subclasses(cls: type, base: type) -> Callable[[], str]:
    def prop() -> str:
        if not (inspect.isclass(cls) and issubclass(cls, base)):
            raise Failed(f"{getattr(cls, '__name__', cls)} does not subclass {base.__name__}")
        return f"subclasses {base.__module__}.{base.__name__}"

    return prop


def skipped(reason: str) -> Callable[[], str]:
    def prop() -> str:
        raise Skipped(reason)

    return prop


def refuses(what: str, call: Callable[[], Any]) -> Callable[[], str]:
    """The fail-closed property: an undeclared use raises a one-line ConfigError."""

    def prop() -> str:
        try:
            call()
        except ConfigError as e:
            return f"refused: {one_line(e)}"
        except Exception as e:
            raise Failed(f"{what}: raised {one_line(e)} instead of a ConfigError") from None
        raise Failed(f"{what} ran without complaint; it must raise ConfigError")

    return prop


def capability(
    flag: str, declared: bool, props: list[Property], use: str, attempt: Callable[[], Any]
) -> list[Property]:
    """A capability's properties where the plugin declares ``flag``; otherwise each is
    skipped and ``refuses_<capability>`` holds the plugin to refusing ``use`` (``attempt``)."""
    if declared:
        return props
    refusal = (f"refuses_{flag.removeprefix('supports_')}", refuses(use, attempt))
    return [*((name, skipped(f"does not declare {flag}")) for name, _ in props), refusal]


def finite_gradients(module: nn.Module, inputs: list[Tensor]) -> str:
    """Finite gradients for every input and parameter, and one for every parameter."""
    for i, t in enumerate(inputs):
        if t.grad is None:
            raise Failed(f"input {i} got no gradient")
        assert_finite(t.grad, f"input {i}'s gradient")
    params = dict(module.named_parameters())
    unused = [n for n, p in params.items() if p.requires_grad and p.grad is None]
    if unused:
        raise Failed(f"parameters that get no gradient: {', '.join(unused[:5])}")
    for name, p in params.items():
        if p.grad is not None:
            assert_finite(p.grad, f"gradient of {name}")
    largest = max((float(t.grad.abs().max()) for t in inputs), default=0.0)
    if largest == 0.0:
        raise Failed("the output does not depend on the input (all input gradients 0)")
    return f"finite; max |∂/∂input| {largest:.1e}, {len(params)} parameter tensors"


def reproducible(a: nn.Module, b: nn.Module, run: Callable[[nn.Module], Tensor]) -> str:
    """Two builds with the same seed hold the same state and compute the same, and a second
    call on the same input repeats the first."""
    sa, sb = a.state_dict(), b.state_dict()
    if sa.keys() != sb.keys():
        raise Failed("two builds with the same seed have different state dict keys")
    for key in sa:
        if isinstance(sa[key], Tensor) and not torch.equal(sa[key], sb[key]):
            raise Failed(f"two builds with the same seed differ in {key}")
    first = run(a)
    assert_close(first, run(b), "two builds with the same seed")
    return assert_close(first, run(a), "two calls on the same input")


def equivariant(
    run: Callable[[Tensor, list[Tensor]], Tensor], x: Tensor, graphs: list[Tensor], what: str
) -> str:
    """Permuting the tokens (B, N, d) and renumbering the graphs' nodes to match permutes
    the output alike."""
    perm = torch.randperm(x.size(1), generator=torch.Generator().manual_seed(3))
    inv = torch.argsort(perm)
    y = run(x, graphs)
    moved = run(x[:, perm], [inv[g] for g in graphs])  # node perm[i] is now node i
    return assert_close(moved, y[:, perm], what)


def padding_invariance(
    x: Tensor,
    lengths: list[int],
    n: int,
    padded: Callable[[Tensor, Tensor], Tensor],
    alone: Callable[[int, int], Tensor],
) -> str:
    """Each sequence of x (B, N, d), cut to its length and padded to n with garbage, gets
    the outputs it gets alone: ``padded(x (B, n, d), mask (B, n))`` against
    ``alone(b, length)`` (1, length, d)."""
    mask = lengths_mask(lengths, n)
    garbage = randn(x.size(0), n, x.size(-1), seed=4) * 10
    xp = torch.where(mask[..., None], pad_to(x, n), garbage)  # (B, n, d)
    y = padded(xp, mask)
    assert_finite(y, "output (padded positions included)")
    worst = max(diff(y[b : b + 1, :length], alone(b, length)) for b, length in enumerate(lengths))
    measured = assert_within(worst, "real positions change with padding")
    return f"{measured} (lengths {lengths} padded to {n} with garbage)"
