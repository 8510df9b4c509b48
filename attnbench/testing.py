"""Conformance checks: the contract of each plugin kind, runnable on any plugin.

``attnbench check KIND NAME [param=value ...]`` and, in a test suite,
``assert_conforms("attention", MyAttention)`` run every property of the kind's contract on
small random inputs and report one :class:`Check` per property: pass or fail with the
measured error, or skip with the reason (a capability the plugin does not declare is
skipped, and the plugin must then *refuse* that use: the fail-closed property).

Modelled on gymnasium's environment checker: a contract that a third-party plugin can be
held to exactly as the built-in ones are. Sizes are tiny and seeds fixed, so one plugin
takes about a second on a CPU; exactness checks run in float64. No Lightning here.
"""

from __future__ import annotations

import contextlib
import inspect
import math
import sys
import tempfile
import time
import types
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor, nn

from attnbench import registry
from attnbench.config import default_plugins
from attnbench.nn.attention import Attention
from attnbench.nn.backbone import Backbone
from attnbench.nn.ctx import Ctx
from attnbench.nn.posenc import PositionalEncoding
from attnbench.registry import AttnbenchError, ConfigError
from attnbench.task import Task

Status = Literal["pass", "fail", "skip"]

B, N, D, HEADS = 2, 5, 16, 2  # batch, tokens, d_model, heads of every check
EXACT = 1e-9  # float64: "the same computation, up to rounding"
SEED = 0


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


# ----------------------------------------------------------------------------- helpers


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:200] if text else ''}".rstrip(": ")


# properties that back-propagate; the others run without autograd
GRAD_PROPERTIES = ("gradients", "loss")


def _run(checks: list[Check], name: str, prop: Callable[[], str]) -> None:
    """Run one property; any exception is that property's failure, never the checker's."""
    try:
        with torch.set_grad_enabled(name in GRAD_PROPERTIES):
            detail = prop()
        checks.append(Check(name, "pass", detail))
    except Skipped as s:
        checks.append(Check(name, "skip", str(s)))
    except Failed as f:
        checks.append(Check(name, "fail", str(f)))
    except Exception as e:
        checks.append(Check(name, "fail", f"raised {_one_line(e)}"))


def _run_all(build: Callable[[], Any], props: list[tuple[str, Callable[[], str]]]) -> list[Check]:
    """Build once (a one-line AttnbenchError means bad parameters and is raised; any other
    error fails the "build" property), then run every property."""
    try:
        build()
    except AttnbenchError:
        raise
    except Exception as e:
        return [Check("build", "fail", f"the constructor raised {_one_line(e)}")]
    checks: list[Check] = []
    for name, prop in props:
        _run(checks, name, prop)
    return checks


def _diff(a: Tensor, b: Tensor) -> float:
    if a.shape != b.shape:
        raise Failed(f"shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}")
    err = float((a.double() - b.double()).abs().max()) if a.numel() else 0.0
    return math.inf if math.isnan(err) else err  # NaN must not vanish inside max()


def _close(a: Tensor, b: Tensor, what: str, tol: float = EXACT) -> str:
    err = _diff(a, b)
    if not err <= tol:  # also catches NaN
        raise Failed(f"{what}: max |Δ| {err:.1e} > {tol:.0e}")
    return f"max |Δ| {err:.1e}"


def _shape(t: Any, expected: tuple[int, ...], what: str) -> None:
    if not isinstance(t, Tensor):
        raise Failed(f"{what} is {type(t).__name__}, not a tensor")
    if tuple(t.shape) != expected:
        raise Failed(f"{what} has shape {tuple(t.shape)}, expected {expected}")


def _finite(t: Tensor, what: str) -> None:
    if not torch.isfinite(t).all():
        raise Failed(f"{what} has {int((~torch.isfinite(t)).sum())} non-finite values")


def _randn(*shape: int, seed: int) -> Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _pad_to(x: Tensor, n: int) -> Tensor:
    """(B, N, d) -> (B, n, d), zeros appended."""
    return torch.nn.functional.pad(x, (0, 0, 0, n - x.size(1)))


def _lengths_mask(lengths: list[int], n: int) -> Tensor:
    """(B, n) True for the first lengths[b] positions."""
    return torch.arange(n)[None, :] < torch.tensor(lengths)[:, None]


def _takes(cls: type, name: str) -> bool:
    try:
        params = inspect.signature(cls).parameters
    except (TypeError, ValueError):
        return False
    var_kw = any(p.kind is p.VAR_KEYWORD for p in params.values())
    return name in params or var_kw


def _construct(kind: str, cls: type, supplied: dict[str, Any], params: dict[str, Any]) -> Any:
    """cls(**the supplied sizes/factories it takes, **params); a required parameter that
    nobody gives is bad input (PluginParameterError), as in registry.build."""
    kwargs = {k: v for k, v in supplied.items() if _takes(cls, k)}
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


def _seeded(make: Callable[[], Any], seed: int = SEED) -> Any:
    torch.manual_seed(seed)
    return make()


def _base(cls: type, base: type) -> Callable[[], str]:
    def prop() -> str:
        if not (inspect.isclass(cls) and issubclass(cls, base)):
            raise Failed(f"{getattr(cls, '__name__', cls)} does not subclass {base.__name__}")
        return f"subclasses {base.__module__}.{base.__name__}"

    return prop


def _refuses(what: str, call: Callable[[], Any]) -> Callable[[], str]:
    """The fail-closed property: an undeclared use raises a one-line ConfigError."""

    def prop() -> str:
        try:
            call()
        except ConfigError as e:
            return f"refused: {_one_line(e)}"
        except Exception as e:
            raise Failed(f"{what}: raised {_one_line(e)} instead of a ConfigError") from None
        raise Failed(f"{what} ran without complaint; it must raise ConfigError")

    return prop


def _skip(reason: str) -> Callable[[], str]:
    def prop() -> str:
        raise Skipped(reason)

    return prop


def _grads(module: nn.Module, inputs: list[Tensor]) -> str:
    """Finite gradients for every input and parameter, and one for every parameter."""
    for i, t in enumerate(inputs):
        if t.grad is None:
            raise Failed(f"input {i} got no gradient")
        _finite(t.grad, f"input {i}'s gradient")
    params = dict(module.named_parameters())
    unused = [n for n, p in params.items() if p.requires_grad and p.grad is None]
    if unused:
        raise Failed(f"parameters that get no gradient: {', '.join(unused[:5])}")
    for name, p in params.items():
        if p.grad is not None:
            _finite(p.grad, f"gradient of {name}")
    largest = max((float(t.grad.abs().max()) for t in inputs), default=0.0)
    if largest == 0.0:
        raise Failed("the output does not depend on the input (all input gradients 0)")
    return f"finite; max |∂/∂input| {largest:.1e}, {len(params)} parameter tensors"


def _same_state(a: nn.Module, b: nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    if sa.keys() != sb.keys():
        raise Failed("two builds with the same seed have different state dict keys")
    for key in sa:
        if isinstance(sa[key], Tensor) and not torch.equal(sa[key], sb[key]):
            raise Failed(f"two builds with the same seed differ in {key}")


@contextlib.contextmanager
def _quiet_rng() -> Iterator[None]:
    """Leave the caller's random state as it was (the checker seeds its own builds)."""
    with torch.random.fork_rng(devices=[]):
        yield


# ----------------------------------------------------------------------------- graph edges


def _local_edges(n: int, seed: int) -> Tensor:
    """(2, E) [query node, key node] within one graph of n nodes: every self-loop, every
    node to node 0 (each row keeps a key no probe blocks), and random edges."""
    g = torch.Generator().manual_seed(seed)
    nodes = torch.arange(n)
    rand = (torch.rand(n, n, generator=g) < 0.4).nonzero().T  # (2, ·)
    edges = torch.cat([torch.stack([nodes, nodes]), torch.stack([nodes, 0 * nodes]), rand], 1)
    return edges.unique(dim=1)


def _flat_edges(per_graph: list[Tensor], n: int) -> Tensor:
    """Per-graph local edges -> the batch's flat (2, E) indices b·n + i."""
    return torch.cat([e + b * n for b, e in enumerate(per_graph)], dim=1)


def _edge_mask(per_graph: list[Tensor], n: int) -> Tensor:
    """(B, 1, n, n) True where an edge lets query i attend key j."""
    mask = torch.zeros(len(per_graph), 1, n, n, dtype=torch.bool)
    for b, (dst, src) in enumerate(per_graph):
        mask[b, 0, dst, src] = True
    return mask


# ----------------------------------------------------------------------------- attention


class _ProbeEncoding(PositionalEncoding):
    """A relative encoding whose effect is known: the score bias blocks the odd keys
    (-1e4, so their weights must vanish) and the rotation negates the queries (so the
    weights must change). Defined here, so the checker depends on no posenc plugin."""

    relative = True

    def __init__(self, d_model: int, block: bool, negate: bool):
        super().__init__(d_model)
        self.block, self.negate = block, negate

    def rotate(self, q: Tensor, k: Tensor, ctx: Ctx) -> tuple[Tensor, Tensor]:
        return (-q, k) if self.negate else (q, k)

    def score_bias(self, nq: int, nk: int, ctx: Ctx) -> Tensor | None:
        if not self.block:
            return None
        bias = torch.zeros(1, 1, nq, nk, dtype=torch.float64)
        bias[..., 1::2] = -1e4  # (1, 1, Nq, Nk)
        return bias


class _AttentionSubject:
    """Builds the variant and its inputs; every ctx carries graph edges if it needs them."""

    def __init__(self, cls: type, params: dict[str, Any]):
        self.cls, self.params = cls, dict(params)
        self.d = int(self.params.pop("d_model", D))
        self.heads = int(self.params.pop("heads", HEADS))
        self.graph = bool(getattr(cls, "needs_graph", False))
        self.flags = {f: bool(getattr(cls, f, False)) for f in _ATTENTION_FLAGS}

    def build(self, seed: int = SEED) -> nn.Module:
        supplied = {"d_model": self.d, "heads": self.heads}
        make = lambda: _construct("attention", self.cls, supplied, self.params)  # noqa: E731
        return _seeded(make, seed).double().eval()

    def x(self, n: int = N, b: int = B, seed: int = 1) -> Tensor:
        return _randn(b, n, self.d, seed=seed)

    def graphs(self, n: int = N, b: int = B, seed: int = 2) -> list[Tensor]:
        return [_local_edges(n, seed + i) for i in range(b)]

    def ctx(self, n: int = N, b: int = B, graphs: list[Tensor] | None = None, **kw: Any) -> Ctx:
        if self.graph:
            kw["edges"] = _flat_edges(graphs or self.graphs(n, b), n)
        return Ctx(**kw)

    def allowed(self, n: int = N, b: int = B, graphs: list[Tensor] | None = None) -> Tensor:
        """(B, 1, n, n) keys each query may see in self-attention without masks."""
        if self.graph:
            return _edge_mask(graphs or self.graphs(n, b), n)
        return torch.ones(b, 1, n, n, dtype=torch.bool)

    def call(self, attn: nn.Module, q: Tensor, kv: Tensor | None = None, **kw: Any):
        kv = q if kv is None else kv
        return attn(q, kv, kv, **kw)


_ATTENTION_FLAGS = (
    "supports_causal",
    "supports_cross",
    "supports_padding",
    "supports_relative_posenc",
    "supports_kv_cache",
    "needs_graph",
    "order_aware",
)


def _weights(s: _AttentionSubject, attn: nn.Module, x: Tensor, ctx: Ctx, kv=None) -> Tensor:
    out, w = s.call(attn, x, kv, ctx=ctx, need_weights=True)
    nk = x.size(1) if kv is None else kv.size(1)
    _shape(w, (x.size(0), s.heads, x.size(1), nk), "weights")
    return w


def _distribution(w: Tensor, allowed: Tensor) -> str:
    """Weights >= 0, exactly 0 on keys not allowed, rows with an allowed key sum to 1."""
    allowed = allowed.expand_as(w)
    if (w < 0).any():
        raise Failed(f"negative weights (min {float(w.min()):.1e})")
    leak = float(w[~allowed].abs().max()) if (~allowed).any() else 0.0
    if leak != 0.0:
        raise Failed(f"disallowed keys get weight up to {leak:.1e} (must be exactly 0)")
    rows = allowed.any(-1)
    err = float((w.sum(-1)[rows] - 1).abs().max()) if rows.any() else 0.0
    if not err <= EXACT:
        raise Failed(f"rows sum to 1 only within {err:.1e}")
    return f"rows sum to 1 within {err:.1e}"


def _attention_props(s: _AttentionSubject) -> list[tuple[str, Callable[[], str]]]:
    cls, flags = s.cls, s.flags
    x = s.x()

    def shapes() -> str:
        attn = s.build()
        out, _ = s.call(attn, x, ctx=s.ctx())
        _shape(out, (B, N, s.d), "output")
        _finite(out, "output")
        w = _weights(s, attn, x, s.ctx())
        return f"out {tuple(out.shape)}, weights {tuple(w.shape)}"

    def need_weights() -> str:
        attn = s.build()
        fast, _ = s.call(attn, x, ctx=s.ctx())
        eager, _ = s.call(attn, x, ctx=s.ctx(), need_weights=True)
        return _close(fast, eager, "need_weights=True changes the output")

    def weights_sum_to_1() -> str:
        return _distribution(_weights(s, s.build(), x, s.ctx()), s.allowed())

    def gradients() -> str:
        attn = s.build()
        kw: dict[str, Any] = {}
        if flags["supports_padding"]:
            kw["key_padding_mask"] = _lengths_mask([N, N - 2], N)
        if flags["supports_causal"]:
            kw["causal"] = True
        xg = x.clone().requires_grad_(True)
        out, _ = s.call(attn, xg, ctx=s.ctx(**kw))
        (out * _randn(*out.shape, seed=9)).sum().backward()
        used = " with " + " and ".join(k.removesuffix("_mask") for k in kw) if kw else ""
        return _grads(attn, [xg]) + used

    def determinism() -> str:
        a, b = s.build(), s.build()
        _same_state(a, b)
        ya, _ = s.call(a, x, ctx=s.ctx())
        yb, _ = s.call(b, x, ctx=s.ctx())
        again, _ = s.call(a, x, ctx=s.ctx())
        _close(ya, yb, "two builds with the same seed")
        return _close(ya, again, "two calls on the same input")

    def permutation() -> str:
        if flags["order_aware"]:
            raise Skipped("declares order_aware: its output depends on token order")
        attn = s.build()
        perm = torch.randperm(N, generator=torch.Generator().manual_seed(3))
        graphs = s.graphs()
        y, _ = s.call(attn, x, ctx=s.ctx(graphs=graphs))
        inv = torch.argsort(perm)
        moved = [inv[g] for g in graphs]  # node perm[i] is now node i
        yp, _ = s.call(attn, x[:, perm], ctx=s.ctx(graphs=moved))
        return _close(yp, y[:, perm], "permuting tokens does not permute the output")

    def padding_mask() -> str:
        mask = _lengths_mask([N, N - 2], N)
        w = _weights(s, s.build(), x, s.ctx(key_padding_mask=mask))
        return _distribution(w, s.allowed() & mask[:, None, None, :]) + ", padded keys 0"

    def padding_invariance() -> str:
        attn = s.build()
        lengths, n = [N, N - 2], N + 2
        mask = _lengths_mask(lengths, n)
        garbage = _randn(B, n, s.d, seed=4) * 10
        xp = torch.where(mask[..., None], _pad_to(x, n), garbage)  # (B, n, d)
        graphs = s.graphs()
        # edges also reach into the padding: the mask must stop them
        padded_graphs = [torch.cat([g, torch.tensor([[0], [n - 1]])], 1) for g in graphs]
        y, _ = s.call(attn, xp, ctx=s.ctx(n, graphs=padded_graphs, key_padding_mask=mask))
        _finite(y, "output (padded positions included)")
        worst = 0.0
        for b, length in enumerate(lengths):
            alone_graph = [graphs[b][:, (graphs[b] < length).all(0)]]
            ref, _ = s.call(attn, x[b : b + 1, :length], ctx=s.ctx(length, 1, alone_graph))
            worst = max(worst, _diff(y[b : b + 1, :length], ref))
        if not worst <= EXACT:
            raise Failed(f"real positions change with padding: max |Δ| {worst:.1e}")
        return f"max |Δ| {worst:.1e} (lengths {lengths} padded to {n} with garbage)"

    def causal_mask() -> str:
        w = _weights(s, s.build(), x, s.ctx(causal=True))
        tril = torch.ones(N, N, dtype=torch.bool).tril()
        return _distribution(w, s.allowed() & tril) + ", future keys 0"

    def causal_future() -> str:
        attn = s.build()
        worst = 0.0
        for need in (False, True):
            y, _ = s.call(attn, x, ctx=s.ctx(causal=True), need_weights=need)
            for t in range(1, N):
                x2 = x.clone()
                x2[:, t:] = _randn(B, N - t, s.d, seed=10 + t)
                y2, _ = s.call(attn, x2, ctx=s.ctx(causal=True), need_weights=need)
                worst = max(worst, _diff(y2[:, :t], y[:, :t]))
        if not worst <= EXACT:
            raise Failed(f"earlier outputs change with later tokens: max |Δ| {worst:.1e}")
        return f"max |Δ| {worst:.1e} over {N - 1} cut points"

    def causal_prefix() -> str:
        if not (flags["supports_causal"] and flags["supports_cross"]):
            raise Skipped("needs supports_causal and supports_cross (a decoder's attention)")
        attn = s.build()
        full, _ = s.call(attn, x, ctx=Ctx(causal=True))
        last, _ = s.call(attn, x[:, -2:], x, ctx=Ctx(causal=True))
        return _close(last, full[:, -2:], "the last queries against all keys")

    def cross() -> str:
        attn = s.build()
        memory = _randn(B, N + 2, s.d, seed=5)
        q = x[:, :3]
        out, _ = s.call(attn, q, memory, ctx=Ctx())
        _shape(out, (B, 3, s.d), "cross-attention output")
        w = _weights(s, attn, q, Ctx(), memory)
        return _distribution(w, torch.ones(1, 1, 1, 1, dtype=torch.bool)) + ", Nq 3 != Nk 7"

    def relative_score_bias() -> str:
        attn = s.build()
        plain = _weights(s, attn, x, s.ctx())
        biased = _weights(s, attn, x, s.ctx(posenc=_ProbeEncoding(s.d, True, False)))
        before, after = float(plain[..., 1::2].max()), float(biased[..., 1::2].max())
        if not after <= 1e-9:
            raise Failed(f"a -1e4 score bias left weights up to {after:.1e} on those keys")
        return f"biased keys' weight {before:.1e} -> {after:.1e}"

    def relative_rotate() -> str:
        attn = s.build()
        plain = _weights(s, attn, x, s.ctx())
        turned = _weights(s, attn, x, s.ctx(posenc=_ProbeEncoding(s.d, False, True)))
        change = _diff(plain, turned)
        if not change > 1e-6:
            raise Failed("negating q in ctx.posenc.rotate left the weights unchanged")
        return f"rotating q changed the weights by up to {change:.1e}"

    def kv_cache() -> str:
        attn = s.build()
        details = []
        if flags["supports_causal"]:
            full, _ = s.call(attn, x, ctx=Ctx(causal=True))
            cache: dict = {}
            steps = [
                s.call(attn, x[:, t : t + 1], ctx=Ctx(causal=True, kv_cache=cache))[0]
                for t in range(N)
            ]
            err = _close(torch.cat(steps, 1), full, "step-wise causal decoding")
            details.append(f"causal steps == full pass, {err}")
        if flags["supports_cross"]:
            memory = _randn(B, N + 2, s.d, seed=5)
            ref, _ = s.call(attn, x, memory, ctx=Ctx())
            static: dict = {"static": True}
            steps = [
                s.call(attn, x[:, t : t + 1], memory, ctx=Ctx(kv_cache=static))[0] for t in range(N)
            ]
            err = _close(torch.cat(steps, 1), ref, "static cross-attention cache")
            details.append(f"static cross cache == no cache, {err}")
        if not details:
            raise Skipped("needs supports_causal or supports_cross to decode with")
        return "; ".join(details)

    def graph() -> str:
        w = _weights(s, s.build(), x, s.ctx())
        return _distribution(w, s.allowed()) + ", off-edge weights 0"

    props: list[tuple[str, Callable[[], str]]] = [
        ("base", _base(cls, Attention)),
        ("shapes", shapes),
        ("need_weights", need_weights),
        ("weights_sum_to_1", weights_sum_to_1),
        ("gradients", gradients),
        ("determinism", determinism),
        ("permutation", permutation),
    ]
    small = x[:, :3]

    def attempt(**kw: Any) -> Callable[[], Any]:
        return lambda: s.call(s.build(), small, ctx=s.ctx(3, **kw))

    capabilities = [
        (
            "supports_padding",
            [("padding_mask", padding_mask), ("padding_invariance", padding_invariance)],
            attempt(key_padding_mask=_lengths_mask([3, 2], 3)),
        ),
        (
            "supports_causal",
            [("causal_mask", causal_mask), ("causal_future", causal_future)],
            attempt(causal=True),
        ),
        ("supports_cross", [("cross", cross)], lambda: cls.check_use(cross=True)),
        (
            "supports_relative_posenc",
            [("relative_score_bias", relative_score_bias), ("relative_rotate", relative_rotate)],
            attempt(posenc=_ProbeEncoding(s.d, True, True)),
        ),
        ("supports_kv_cache", [("kv_cache", kv_cache)], attempt(kv_cache={})),
    ]
    for flag, checks, undeclared_use in capabilities:
        use = flag.removeprefix("supports_")
        if flags[flag]:
            props += checks
        else:
            props += [(name, _skip(f"does not declare {flag}")) for name, _ in checks]
            props.append((f"refuses_{use}", _refuses(f"an undeclared {use} use", undeclared_use)))
    props.append(("causal_prefix", causal_prefix))
    if flags["needs_graph"]:
        props.append(("graph", graph))
        no_edges = lambda: s.call(s.build(), small, ctx=Ctx())  # noqa: E731
        props.append(("refuses_no_edges", _refuses("a call without ctx.edges", no_edges)))
    else:
        props.append(("graph", _skip("does not declare needs_graph (attends every key)")))
    return props


def check_attention(cls: type, **params: Any) -> list[Check]:
    """The attention contract on ``cls`` (built with d_model=16, heads=2 unless given)."""
    s = _AttentionSubject(cls, params)
    with _quiet_rng():
        return _run_all(s.build, _attention_props(s))


# ----------------------------------------------------------------------------- posenc


def check_posenc(cls: type, **params: Any) -> list[Check]:
    """The positional-encoding contract on ``cls`` (d_model=16, heads=2 if it takes heads)."""
    d = int(params.pop("d_model", D))
    heads = int(params.pop("heads", HEADS))
    supplied = {"d_model": d, "heads": heads}

    def build(seed: int = SEED) -> nn.Module:
        return _seeded(lambda: _construct("posenc", cls, supplied, params), seed).double().eval()

    hd = d // heads
    x = _randn(B, N, d, seed=1)
    same = _randn(1, 1, d, seed=2).expand(1, N, d)  # one vector at every position
    q, k = _randn(B, heads, N, hd, seed=3), _randn(B, heads, N, hd, seed=4)
    relative = bool(getattr(cls, "relative", False))

    def scores(pe: nn.Module, q: Tensor, k: Tensor, ctx: Ctx) -> Tensor:
        """(B, h, Nq, Nk) q·k after rotate, plus score_bias."""
        rq, rk = pe.rotate(q, k, ctx)
        _shape(rq, tuple(q.shape), "rotated q")
        _shape(rk, tuple(k.shape), "rotated k")
        s = rq @ rk.transpose(-2, -1)
        bias = pe.score_bias(q.size(-2), k.size(-2), ctx)
        return s if bias is None else s + bias

    def shapes() -> str:
        pe = build()
        out = pe(x, Ctx())
        _shape(out, (B, N, d), "forward output")
        _finite(out, "forward output")
        positions = torch.arange(N)[None].expand(B, N) + 3
        _shape(pe(x, Ctx(positions=positions)), (B, N, d), "output with ctx.positions")
        return f"forward keeps {(B, N, d)}"

    def determinism() -> str:
        a, b = build(), build()
        _same_state(a, b)
        _close(a(x, Ctx()), b(x, Ctx()), "two builds with the same seed")
        detail = _close(a(x, Ctx()), a(x, Ctx()), "two calls on the same input")
        if relative:
            _close(scores(a, q, k, Ctx()), scores(b, q, k, Ctx()), "scores of two builds")
        return detail

    def gradients() -> str:
        pe = build()
        xg, qg, kg = (t.clone().requires_grad_(True) for t in (x, q, k))
        loss = (pe(xg, Ctx()) * _randn(B, N, d, seed=5)).sum()
        inputs = [xg]
        if relative:
            loss = loss + (scores(pe, qg, kg, Ctx()) * _randn(B, heads, N, N, seed=6)).sum()
            inputs += [qg, kg]
        loss.backward()
        return _grads(pe, inputs)

    def identity(pe: nn.Module) -> bool:
        return torch.equal(pe(same, Ctx()), same)

    def positions() -> str:
        pe = build()
        if identity(pe):
            raise Skipped("adds nothing to the embeddings (no positional information)")
        out = pe(same, Ctx())[0]  # (N, d)
        gaps = torch.cdist(out, out) + torch.eye(N) * 1e9
        gap = float(gaps.min())
        if not gap > 1e-6:
            raise Failed(f"two positions get the same encoding (min distance {gap:.1e})")
        return f"{N} positions, {N} distinct rows (min distance {gap:.1e})"

    def ctx_positions() -> str:
        pe = build()
        if identity(pe):
            raise Skipped("adds nothing to the embeddings (no positional information)")
        order = torch.tensor([[3, 0, 4, 1, 2]])
        picked = pe(same, Ctx(positions=order))
        return _close(picked, pe(same, Ctx())[:, order[0]], "rows for explicit ctx.positions")

    def bias_shape() -> str:
        pe = build()
        shown = []
        for nq in (N, 2):
            bias = pe.score_bias(nq, N, Ctx())
            if bias is None:
                return "score_bias is None (rotation only)"
            want = (B, heads, nq, N)
            if bias.dim() > 4 or torch.broadcast_shapes(bias.shape, want) != want:
                raise Failed(f"score_bias {tuple(bias.shape)} does not broadcast to {want}")
            if bias.dim() == 4 and bias.size(1) not in (1, heads):
                raise Failed(f"score_bias has {bias.size(1)} heads; built with {heads}")
            _finite(bias, "score_bias")
            shown.append(str(tuple(bias.shape)))
        return f"score_bias {' and '.join(shown)} broadcast to (B, h, Nq, Nk)"

    def rotate_shapes() -> str:
        pe = build()
        scores(pe, q, k, Ctx())
        scores(pe, q[:, :, -2:], k, Ctx(causal=True))
        return f"rotate keeps q {tuple(q.shape)} and k {tuple(k.shape)}"

    def shift_invariance() -> str:
        pe = build()
        base = scores(pe, q, k, Ctx())
        worst = 0.0
        for shift in (1, 11):
            moved = Ctx(positions=torch.arange(N)[None].expand(B, N) + shift)
            worst = max(worst, _diff(scores(pe, q, k, moved), base))
        tol = 1e-5 * (1 + float(base.abs().max()))  # rotations may run in float32
        if not worst <= tol:
            raise Failed(f"scores change when every position shifts: max |Δ| {worst:.1e}")
        return f"max |Δ| {worst:.1e} for shifts 1 and 11"

    def offsets_matter() -> str:
        pe = build()
        qs, ks = (_randn(1, 1, 1, hd, seed=s).expand(1, heads, N, hd) for s in (7, 8))
        s = scores(pe, qs, ks, Ctx())
        spread = float(s.max() - s.min())
        if not spread > 1e-6:
            raise Failed("the same q and k score alike at every offset: no position information")
        return f"scores of one q, k pair vary by {spread:.1e} across offsets"

    def decoding_rows() -> str:
        pe = build()
        full = scores(pe, q, k, Ctx(causal=True))
        last = scores(pe, q[:, :, -2:], k, Ctx(causal=True))
        return _close(last, full[..., -2:, :], "the last queries' scores (Nq < Nk)")

    props: list[tuple[str, Callable[[], str]]] = [
        ("base", _base(cls, PositionalEncoding)),
        ("shapes", shapes),
        ("determinism", determinism),
        ("gradients", gradients),
    ]
    absolute = [("positions", positions), ("ctx_positions", ctx_positions)]
    relative_props = [
        ("rotate_shapes", rotate_shapes),
        ("score_bias_shape", bias_shape),
        ("shift_invariance", shift_invariance),
        ("offsets_matter", offsets_matter),
        ("decoding_rows", decoding_rows),
    ]
    if relative:
        props += [(n, _skip("relative encoding: adds nothing to embeddings")) for n, _ in absolute]
        props += relative_props
    else:
        props += absolute
        props += [(n, _skip("absolute encoding (relative = False)")) for n, _ in relative_props]
    with _quiet_rng():
        return _run_all(build, props)


# ----------------------------------------------------------------------------- backbone


def stub_task(**flags: bool) -> types.SimpleNamespace:
    """What a backbone's constructor and check_task read of a task: its structure only."""
    base = {"gives_edges": False, "grid": False, "pads": False, "seq2seq": False}
    return types.SimpleNamespace(**{**base, **flags})


def _factory(kind: str, chosen: str | Callable[..., Any]) -> tuple[Callable[..., Any], Any]:
    """(factory, plugin class or None) for a registered name or a ready factory."""
    if isinstance(chosen, str):
        return registry.factory(kind, chosen), registry.get(kind, chosen).cls
    return chosen, None


def check_backbone(cls: type, **params: Any) -> list[Check]:
    """The backbone contract on ``cls``: built with d_model=16, a stub task and, where it
    takes them, the registry's ``dot`` attention and ``none`` posenc (``attention=`` and
    ``posenc=`` take another registered name, or a factory)."""
    d = int(params.pop("d_model", D))
    chosen = default_plugins()  # conf/config.yaml's: the core names no plugin
    attention, attention_cls = _factory("attention", params.pop("attention", chosen["attention"]))
    posenc, posenc_cls = _factory("posenc", params.pop("posenc", chosen["posenc"]))
    supplied: dict[str, Any] = {"d_model": d, "attention": attention, "posenc": posenc}
    uses_attention = attention_cls is not None and _takes(cls, "attention")
    if uses_attention:  # a combination the harness would refuse is bad input, as there
        relative = bool(posenc_cls is not None and posenc_cls.relative and _takes(cls, "posenc"))
        attention_cls.check_use(relative_posenc=relative)

    def serves(**uses: bool) -> None:
        """Skip a task structure the chosen attention cannot serve (not the backbone's fault)."""
        if uses_attention:
            try:
                attention_cls.check_use(**uses)
            except ConfigError as e:
                raise Skipped(f"the chosen attention cannot serve it ({_one_line(e)})") from None

    flags = {
        f: bool(getattr(cls, f, False))
        for f in ("supports_graph", "supports_grid", "supports_padding", "supports_seq2seq")
    }

    def build(seed: int = SEED, **task_flags: bool) -> nn.Module:
        extra = {"task": stub_task(**task_flags)}
        make = lambda: _construct("model", cls, {**supplied, **extra}, params)  # noqa: E731
        return _seeded(make, seed).double().eval()

    x = _randn(B, N, d, seed=1)

    def d_model() -> str:
        got = getattr(build(), "d_model", None)
        if got != d:
            raise Failed(f"d_model is {got!r}, built with {d}")
        return f"d_model == {d}"

    def shapes() -> str:
        out = build()(x, Ctx())
        _shape(out, (B, N, d), "output")
        _finite(out, "output")
        return f"{(B, N, d)} -> {tuple(out.shape)}"

    def gradients() -> str:
        model = build()
        xg = x.clone().requires_grad_(True)
        (model(xg, Ctx()) * _randn(B, N, d, seed=9)).sum().backward()
        return _grads(model, [xg])

    def determinism() -> str:
        a, b = build(), build()
        _same_state(a, b)
        _close(a(x, Ctx()), b(x, Ctx()), "two builds with the same seed")
        return _close(a(x, Ctx()), a(x, Ctx()), "two calls on the same input")

    def padding_invariance() -> str:
        serves(padding=True)
        model = build()
        lengths, n = [N, N - 3], N + 2
        mask = _lengths_mask(lengths, n)
        garbage = _randn(B, n, d, seed=4) * 10
        xp = torch.where(mask[..., None], _pad_to(x, n), garbage)  # (B, n, d)
        y = model(xp, Ctx(key_padding_mask=mask))
        _finite(y, "output (padded positions included)")
        worst = max(
            _diff(y[b : b + 1, :length], model(x[b : b + 1, :length], Ctx()))
            for b, length in enumerate(lengths)
        )
        if not worst <= EXACT:
            raise Failed(f"real positions change with padding: max |Δ| {worst:.1e}")
        return f"max |Δ| {worst:.1e} (lengths {lengths} padded to {n} with garbage)"

    def graph() -> str:
        serves(graph=True)
        model = build(gives_edges=True)
        graphs = [_local_edges(N, 2 + b) for b in range(B)]
        perm = torch.randperm(N, generator=torch.Generator().manual_seed(3))
        inv = torch.argsort(perm)
        zeros = torch.zeros(B, N, dtype=torch.long)  # graph tasks give nodes no order

        def run(x: Tensor, graphs: list[Tensor]) -> Tensor:
            return model(x, Ctx(positions=zeros, edges=_flat_edges(graphs, N)))

        y = run(x, graphs)
        moved = run(x[:, perm], [inv[g] for g in graphs])
        return _close(moved, y[:, perm], "permuting the nodes does not permute the output")

    def grid() -> str:
        model = build(grid=True)
        rows, cols = 2, 3
        r, c = torch.meshgrid(torch.arange(rows), torch.arange(cols), indexing="ij")
        positions = torch.stack([r.flatten(), c.flatten()], -1).expand(B, -1, -1)  # (B, 6, 2)
        xg = _randn(B, rows * cols, d, seed=6)
        out = model(xg, Ctx(positions=positions))
        _shape(out, (B, rows * cols, d), "output on a 2x3 patch grid")
        _finite(out, "output on a 2x3 patch grid")
        return f"2x3 grid (ctx.positions (B, 6, 2)) -> {tuple(out.shape)}"

    def seq2seq() -> str:
        serves(causal=True, cross=True, padding=flags["supports_padding"])
        model = build(seq2seq=True)
        src = _randn(B, N + 1, d, seed=7)
        mask = _lengths_mask([N + 1, N - 1], N + 1) if flags["supports_padding"] else None
        src_ctx = Ctx(key_padding_mask=mask)
        memory = model.encode(src, src_ctx)
        _shape(memory, (B, N + 1, d), "encode output")
        y = _randn(B, N, d, seed=8)
        full, _ = model.decode(y, memory, src_ctx)
        _shape(full, (B, N, d), "decode output")
        cache, steps = None, []
        for t in range(N):
            h, cache = model.decode(y[:, t : t + 1], memory, src_ctx, cache)
            steps.append(h)
        detail = _close(torch.cat(steps, 1), full, "step-wise decoding with the cache")
        return f"step-wise == teacher-forced decode, {detail}"

    props: list[tuple[str, Callable[[], str]]] = [
        ("base", _base(cls, Backbone)),
        ("d_model", d_model),
        ("shapes", shapes),
        ("gradients", gradients),
        ("determinism", determinism),
    ]
    capabilities = [
        ("supports_padding", "padding_invariance", padding_invariance, "pads"),
        ("supports_graph", "graph", graph, "gives_edges"),
        ("supports_grid", "grid", grid, "grid"),
        ("supports_seq2seq", "seq2seq", seq2seq, "seq2seq"),
    ]
    for flag, name, prop, task_flag in capabilities:
        if flags[flag]:
            props.append((name, prop))
            continue
        props.append((name, _skip(f"does not declare {flag}")))
        stub = stub_task(**{task_flag: True})
        props.append(
            (
                f"refuses_{flag.removeprefix('supports_')}",
                _refuses(f"a task with {task_flag}=True", lambda s=stub: cls.check_task(s)),
            )
        )
    with _quiet_rng():
        return _run_all(build, props)


# ----------------------------------------------------------------------------- task


class _Identity(nn.Module):
    """A backbone stand-in that changes nothing, so a task's pieces are checked alone."""

    def __init__(self, d_model: int):
        super().__init__()
        self.d_model = d_model

    def forward(self, x: Tensor, ctx: Ctx) -> Tensor:
        return x

    def encode(self, x: Tensor, ctx: Ctx) -> Tensor:
        return x

    def decode(self, y: Tensor, memory: Tensor, src_ctx: Ctx, cache: dict | None = None):
        return y, dict(cache or {})


class _Net(nn.Module):
    """What Task.forward receives: the embedder and head around a backbone."""

    def __init__(self, embedder: nn.Module, backbone: nn.Module, head: nn.Module):
        super().__init__()
        self.embedder, self.backbone, self.head = embedder, backbone, head


def _task_forward(task: Task, net: nn.Module, batch: Any, stage: str) -> Any:
    """task.forward(net, batch, stage), or (net, batch) for a task written before stages."""
    params = inspect.signature(task.forward).parameters
    if "stage" in params or len(params) >= 3:
        return task.forward(net, batch, stage)
    return task.forward(net, batch)


def _same_batch(a: Any, b: Any) -> bool:
    if isinstance(a, Tensor):
        return isinstance(b, Tensor) and a.shape == b.shape and torch.equal(a, b)
    if isinstance(a, dict):
        same_keys = isinstance(b, dict) and a.keys() == b.keys()
        return same_keys and all(_same_batch(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return type(a) is type(b) and len(a) == len(b) and all(map(_same_batch, a, b))
    return a == b


def _floats(outputs: Any) -> list[Tensor]:
    if isinstance(outputs, Tensor):
        return [outputs] if outputs.is_floating_point() else []
    if isinstance(outputs, dict):
        return [t for v in outputs.values() for t in _floats(v)]
    if isinstance(outputs, list | tuple):
        return [t for v in outputs for t in _floats(v)]
    return []


SPLITS = ("train", "val", "test")


def check_task(cls: type, **params: Any) -> list[Check]:
    """The task contract on ``cls``: built with a temporary data_dir (built-in data) unless
    ``data_dir`` is given, set up once, one batch of each split through its embedder, an
    identity backbone and its head, loss and metrics."""
    with contextlib.ExitStack() as stack:
        if "data_dir" not in params:
            params["data_dir"] = stack.enter_context(tempfile.TemporaryDirectory())
        with _quiet_rng():
            return _check_task(cls, params)


def _check_task(cls: type, params: dict[str, Any]) -> list[Check]:
    torch.manual_seed(SEED)
    try:
        task = _construct("task", cls, {}, params)
    except AttnbenchError:
        raise
    except Exception as e:
        return [Check("build", "fail", f"the constructor raised {_one_line(e)}")]
    state: dict[str, Any] = {}

    def setup() -> str:
        start = time.perf_counter()
        task.setup()
        state["setup"] = True
        return f"{time.perf_counter() - start:.2f} s"

    def needs_setup() -> None:
        if "setup" not in state:
            raise Failed("not checked: setup failed")

    def first(split: str) -> Any:
        torch.manual_seed(SEED)
        return next(iter(task.dataloader(split)))

    def batches() -> str:
        needs_setup()
        state["batches"] = {split: first(split) for split in SPLITS}
        return f"one batch of each of {', '.join(SPLITS)}"

    def needs_batches() -> dict[str, Any]:
        if "batches" not in state:
            raise Failed("not checked: no batches")
        return state["batches"]

    def determinism() -> str:
        found = needs_batches()
        moved = [s for s in SPLITS if not _same_batch(found[s], first(s))]
        if moved:
            raise Failed(f"the first {'/'.join(moved)} batch differs under the same seed")
        return "each split's first batch is the same under the same seed"

    def net() -> nn.Module:
        if "net" not in state:
            torch.manual_seed(SEED)
            state["net"] = _Net(task.build_embedder(D), _Identity(D), task.build_head(D))
        return state["net"]

    def embedder() -> str:
        found = needs_batches()
        shapes = []
        for split in SPLITS:
            x, ctx = net().embedder(found[split])
            if not isinstance(ctx, Ctx):
                raise Failed(f"the embedder returns {type(ctx).__name__}, not a Ctx")
            if not (isinstance(x, Tensor) and x.dim() == 3 and x.size(-1) == D):
                raise Failed(f"embeddings {tuple(getattr(x, 'shape', ()))} are not (B, N, {D})")
            _finite(x, f"{split} embeddings")
            shapes.append(tuple(x.shape))
            state.setdefault("ctx", []).append((x, ctx))
        return f"x {shapes[0]} (B, N, {D}) and a Ctx"

    def ctx_prop(check: Callable[[Tensor, Ctx], str]) -> Callable[[], str]:
        def prop() -> str:
            if "ctx" not in state:
                raise Failed("not checked: the embedder failed")
            return [check(x, ctx) for x, ctx in state["ctx"]][0]

        return prop

    def edges(x: Tensor, ctx: Ctx) -> str:
        b, n = x.shape[:2]
        if not getattr(task, "gives_edges", False):
            if ctx.edges is not None:
                raise Failed("ctx.edges is set but the task does not declare gives_edges")
            return "gives_edges False, ctx.edges None"
        e = ctx.edges
        if not (isinstance(e, Tensor) and e.dim() == 2 and e.size(0) == 2):
            raise Failed(f"gives_edges but ctx.edges is {getattr(e, 'shape', e)}, not (2, E)")
        if e.dtype != torch.long or e.min() < 0 or e.max() >= b * n:
            raise Failed(f"ctx.edges must be long flat node indices in [0, {b * n})")
        return f"gives_edges, ctx.edges (2, {e.size(1)})"

    def grid(x: Tensor, ctx: Ctx) -> str:
        b, n = x.shape[:2]
        p = ctx.positions
        if getattr(task, "grid", False):
            _shape(p, (b, n, 2), "ctx.positions of a grid task")
            return f"grid, ctx.positions {(b, n, 2)}"
        if p is not None and tuple(p.shape) != (b, n):
            raise Failed(f"ctx.positions {tuple(p.shape)}: a task without grid gives (B, N)")
        return "grid False, positions None or (B, N)"

    def padding(x: Tensor, ctx: Ctx) -> str:
        b, n = x.shape[:2]
        mask = ctx.key_padding_mask
        if mask is None:
            return f"pads {getattr(task, 'pads', True)}, no key_padding_mask"
        if not getattr(task, "pads", True):
            raise Failed("ctx.key_padding_mask is set but the task declares pads = False")
        _shape(mask, (b, n), "ctx.key_padding_mask")
        if mask.dtype != torch.bool:
            raise Failed(f"ctx.key_padding_mask is {mask.dtype}, not bool")
        return f"pads, key_padding_mask {(b, n)} bool"

    def loss() -> str:
        found = needs_batches()
        model = net().train()
        outputs = _task_forward(task, model, found["train"], "train")
        value = task.loss(outputs, found["train"])
        if not (isinstance(value, Tensor) and value.dim() == 0):
            raise Failed(f"loss is {getattr(value, 'shape', type(value).__name__)}, not a scalar")
        _finite(value, "loss")
        value.backward()
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        if not grads:
            raise Failed("the loss gives the embedder and head no gradient")
        for g in grads:
            _finite(g, "a parameter gradient")
        return f"train loss {float(value.detach()):.3f}, finite gradients"

    def metrics() -> str:
        found = needs_batches()
        model = net().eval()
        made = task.metrics()
        if not isinstance(made, dict) or not made:
            raise Failed("metrics() must return a non-empty {name: torchmetrics metric}")
        scored = [s for s in ("val", "test") if s not in getattr(task, "unlabeled_splits", ())]
        values = {}
        for split in scored:
            with torch.no_grad():
                outputs = _task_forward(task, model, found[split], split)
                for t in _floats(outputs):
                    _finite(t, f"{split} outputs")
                task.loss(outputs, found[split])
                inputs = task.metric_inputs(outputs, found[split])
            for metric in made.values():
                metric.update(*inputs)
        for name, metric in made.items():
            value = torch.as_tensor(metric.compute())
            _finite(value, f"metric {name}")
            values[name] = float(value)
        names = {f"val/{n}" for n in made} | {"val/loss"}
        if task.monitor not in names:
            raise Failed(f"monitor {task.monitor!r} is none of {', '.join(sorted(names))}")
        shown = ", ".join(f"{k} {v:.3g}" for k, v in values.items())
        return f"{shown} on {'+'.join(scored)}; monitor {task.monitor}"

    def num_samples() -> str:
        found = needs_batches()
        counts = [task.num_samples(found[s]) for s in SPLITS]
        bad = [c for c in counts if not (isinstance(c, int) and not isinstance(c, bool) and c > 0)]
        if bad:
            raise Failed(f"num_samples gave {bad[0]!r}; it must be a positive int")
        return f"{counts}"

    props: list[tuple[str, Callable[[], str]]] = [
        ("base", _base(cls, Task)),
        ("setup", setup),
        ("batches", batches),
        ("determinism", determinism),
        ("embedder", embedder),
        ("ctx_edges", ctx_prop(edges)),
        ("ctx_grid", ctx_prop(grid)),
        ("ctx_padding", ctx_prop(padding)),
        ("loss", loss),
        ("metrics", metrics),
        ("num_samples", num_samples),
    ]
    return _run_all(lambda: task, props)


# ----------------------------------------------------------------------------- entry points

CHECKERS: dict[str, Callable[..., list[Check]]] = {
    "attention": check_attention,
    "posenc": check_posenc,
    "model": check_backbone,
    "task": check_task,
}
ALIASES = {"backbone": "model"}


def _kind(kind: str) -> str:
    kind = ALIASES.get(kind, kind)
    if kind not in CHECKERS:
        raise registry.UnknownPluginError(
            f"unknown plugin kind {kind!r}; {registry.suggest(kind, list(CHECKERS))}"
        )
    return kind


def check(kind: str, name: str, **params: Any) -> list[Check]:
    """The contract of ``kind`` on the plugin registered as ``name``."""
    kind = _kind(kind)
    return CHECKERS[kind](registry.get(kind, name).cls, **params)


def assert_conforms(kind: str, cls_or_name: type | str, **params: Any) -> list[Check]:
    """For a test suite: raise AssertionError listing every failed property."""
    kind = _kind(kind)
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


# ----------------------------------------------------------------------------- CLI

USAGE = "usage: attnbench check KIND NAME [param=value ...]"
HELP = f"""{USAGE}

Run the contract of a plugin kind (attention, posenc, model, task) on a registered plugin:
one line per property (PASS / FAIL with the measured error / SKIP with the reason), then a
summary. Exit status 0 when every property holds, 1 when one fails, 2 for bad input.
Parameters are the plugin's own (attention window=4); attention and posenc also take
d_model= and heads= (default 16 and 2), a model takes attention=NAME and posenc=NAME
(default dot and none), a task data_dir=PATH (default: a temporary directory)."""
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
    kind, name = _kind(argv[0]), argv[1]
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
    from attnbench.config import plugin_params  # checks names and types as a run does

    _, params = plugin_params(kind, {"_name_": name, **raw})
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


__all__ = [
    "Check",
    "assert_conforms",
    "check",
    "check_attention",
    "check_backbone",
    "check_posenc",
    "check_task",
    "failed",
    "main",
    "stub_task",
]
