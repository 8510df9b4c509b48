"""The attention contract: shapes, weights that are distributions over the allowed keys,
gradients, determinism, permutation equivariance, and each declared capability honoured
(padding, causal, cross, relative encodings, KV cache, graph edges) or refused."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from attnbench.nn.attention import CAPABILITIES, Attention
from attnbench.nn.ctx import Ctx
from attnbench.nn.posenc import PositionalEncoding
from attnbench.testing._core import (
    EXACT,
    B,
    Check,
    Failed,
    N,
    Property,
    Skipped,
    assert_close,
    assert_output,
    assert_shape,
    assert_within,
    build_module,
    diff,
    run_all,
    sizes,
)
from attnbench.testing._inputs import edge_mask, flat_edges, lengths_mask, randn, random_graphs
from attnbench.testing._properties import (
    capability,
    equivariant,
    finite_gradients,
    padding_invariance,
    refuses,
    reproducible,
    skipped,
    subclasses,
)

FLAGS = (*CAPABILITIES, "needs_graph", "order_aware")


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


class _Subject:
    """Builds the variant and its inputs; every ctx carries graph edges if it needs them."""

    def __init__(self, cls: type, params: dict[str, Any]):
        self.cls, self.params = cls, dict(params)
        self.d, self.heads = sizes(self.params)
        self.graph = bool(getattr(cls, "needs_graph", False))
        self.flags = {f: bool(getattr(cls, f, False)) for f in FLAGS}

    def build(self) -> nn.Module:
        supplied = {"d_model": self.d, "heads": self.heads}
        return build_module("attention", self.cls, supplied, self.params)

    def x(self, n: int = N, b: int = B, seed: int = 1) -> Tensor:
        return randn(b, n, self.d, seed=seed)

    def ctx(self, n: int = N, b: int = B, graphs: list[Tensor] | None = None, **kw: Any) -> Ctx:
        if self.graph:
            kw["edges"] = flat_edges(graphs or random_graphs(n, b), n)
        return Ctx(**kw)

    def allowed(self, n: int = N, b: int = B, graphs: list[Tensor] | None = None) -> Tensor:
        """(B, 1, n, n) keys each query may see in self-attention without masks."""
        if self.graph:
            return edge_mask(graphs or random_graphs(n, b), n)
        return torch.ones(b, 1, n, n, dtype=torch.bool)

    def call(self, attn: nn.Module, q: Tensor, kv: Tensor | None = None, **kw: Any):
        kv = q if kv is None else kv
        return attn(q, kv, kv, **kw)

    def weights(self, attn: nn.Module, x: Tensor, ctx: Ctx, kv: Tensor | None = None) -> Tensor:
        """(B, heads, Nq, Nk) weights of a call, checked for shape."""
        out, w = self.call(attn, x, kv, ctx=ctx, need_weights=True)
        nk = x.size(1) if kv is None else kv.size(1)
        assert_shape(w, (x.size(0), self.heads, x.size(1), nk), "weights")
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


def _attention_properties(s: _Subject) -> list[Property]:
    cls, flags = s.cls, s.flags
    x = s.x()

    def shapes() -> str:
        attn = s.build()
        out, _ = s.call(attn, x, ctx=s.ctx())
        assert_output(out, (B, N, s.d), "output")
        w = s.weights(attn, x, s.ctx())
        return f"out {tuple(out.shape)}, weights {tuple(w.shape)}"

    def need_weights() -> str:
        attn = s.build()
        fast, _ = s.call(attn, x, ctx=s.ctx())
        eager, _ = s.call(attn, x, ctx=s.ctx(), need_weights=True)
        return assert_close(fast, eager, "need_weights=True changes the output")

    def weights_sum_to_1() -> str:
        return _distribution(s.weights(s.build(), x, s.ctx()), s.allowed())

    def gradients() -> str:
        attn = s.build()
        kw: dict[str, Any] = {}
        if flags["supports_padding"]:
            kw["key_padding_mask"] = lengths_mask([N, N - 2], N)
        if flags["supports_causal"]:
            kw["causal"] = True
        xg = x.clone().requires_grad_(True)
        out, _ = s.call(attn, xg, ctx=s.ctx(**kw))
        (out * randn(*out.shape, seed=9)).sum().backward()
        used = " with " + " and ".join(k.removesuffix("_mask") for k in kw) if kw else ""
        return finite_gradients(attn, [xg]) + used

    def determinism() -> str:
        return reproducible(s.build(), s.build(), lambda attn: s.call(attn, x, ctx=s.ctx())[0])

    def permutation() -> str:
        if flags["order_aware"]:
            raise Skipped("declares order_aware: its output depends on token order")
        attn = s.build()

        def run(x: Tensor, graphs: list[Tensor]) -> Tensor:
            return s.call(attn, x, ctx=s.ctx(graphs=graphs))[0]

        return equivariant(run, x, random_graphs(), "permuting tokens does not permute the output")

    def padding_mask() -> str:
        mask = lengths_mask([N, N - 2], N)
        w = s.weights(s.build(), x, s.ctx(key_padding_mask=mask))
        return _distribution(w, s.allowed() & mask[:, None, None, :]) + ", padded keys 0"

    def padding_invariant() -> str:
        attn = s.build()
        lengths, n = [N, N - 2], N + 2
        found = random_graphs()
        # edges also reach into the padding: the mask must stop them
        padded_graphs = [torch.cat([g, torch.tensor([[0], [n - 1]])], 1) for g in found]

        def padded(xp: Tensor, mask: Tensor) -> Tensor:
            return s.call(attn, xp, ctx=s.ctx(n, graphs=padded_graphs, key_padding_mask=mask))[0]

        def alone(b: int, length: int) -> Tensor:
            own = [found[b][:, (found[b] < length).all(0)]]
            return s.call(attn, x[b : b + 1, :length], ctx=s.ctx(length, 1, own))[0]

        return padding_invariance(x, lengths, n, padded, alone)

    def causal_mask() -> str:
        w = s.weights(s.build(), x, s.ctx(causal=True))
        tril = torch.ones(N, N, dtype=torch.bool).tril()
        return _distribution(w, s.allowed() & tril) + ", future keys 0"

    def causal_future() -> str:
        attn = s.build()
        worst = 0.0
        for need in (False, True):
            y, _ = s.call(attn, x, ctx=s.ctx(causal=True), need_weights=need)
            for t in range(1, N):
                x2 = x.clone()
                x2[:, t:] = randn(B, N - t, s.d, seed=10 + t)
                y2, _ = s.call(attn, x2, ctx=s.ctx(causal=True), need_weights=need)
                worst = max(worst, diff(y2[:, :t], y[:, :t]))
        measured = assert_within(worst, "earlier outputs change with later tokens")
        return f"{measured} over {N - 1} cut points"

    def causal_prefix() -> str:
        if not (flags["supports_causal"] and flags["supports_cross"]):
            raise Skipped("needs supports_causal and supports_cross (a decoder's attention)")
        attn = s.build()
        full, _ = s.call(attn, x, ctx=Ctx(causal=True))
        last, _ = s.call(attn, x[:, -2:], x, ctx=Ctx(causal=True))
        return assert_close(last, full[:, -2:], "the last queries against all keys")

    def cross() -> str:
        attn = s.build()
        memory = randn(B, N + 2, s.d, seed=5)
        q = x[:, :3]
        out, _ = s.call(attn, q, memory, ctx=Ctx())
        assert_shape(out, (B, 3, s.d), "cross-attention output")
        w = s.weights(attn, q, Ctx(), memory)
        return _distribution(w, torch.ones(1, 1, 1, 1, dtype=torch.bool)) + ", Nq 3 != Nk 7"

    def relative_score_bias() -> str:
        attn = s.build()
        plain = s.weights(attn, x, s.ctx())
        biased = s.weights(attn, x, s.ctx(posenc=_ProbeEncoding(s.d, True, False)))
        before, after = float(plain[..., 1::2].max()), float(biased[..., 1::2].max())
        if not after <= 1e-9:
            raise Failed(f"a -1e4 score bias left weights up to {after:.1e} on those keys")
        return f"biased keys' weight {before:.1e} -> {after:.1e}"

    def relative_rotate() -> str:
        attn = s.build()
        plain = s.weights(attn, x, s.ctx())
        turned = s.weights(attn, x, s.ctx(posenc=_ProbeEncoding(s.d, False, True)))
        change = diff(plain, turned)
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
            err = assert_close(torch.cat(steps, 1), full, "step-wise causal decoding")
            details.append(f"causal steps == full pass, {err}")
        if flags["supports_cross"]:
            memory = randn(B, N + 2, s.d, seed=5)
            ref, _ = s.call(attn, x, memory, ctx=Ctx())
            static: dict = {"static": True}
            steps = [
                s.call(attn, x[:, t : t + 1], memory, ctx=Ctx(kv_cache=static))[0] for t in range(N)
            ]
            err = assert_close(torch.cat(steps, 1), ref, "static cross-attention cache")
            details.append(f"static cross cache == no cache, {err}")
        if not details:
            raise Skipped("needs supports_causal or supports_cross to decode with")
        return "; ".join(details)

    def graph() -> str:
        w = s.weights(s.build(), x, s.ctx())
        return _distribution(w, s.allowed()) + ", off-edge weights 0"

    small = x[:, :3]

    def attempt(**kw: Any) -> Callable[[], Any]:
        return lambda: s.call(s.build(), small, ctx=s.ctx(3, **kw))

    def declared(
        flag: str, props: list[Property], undeclared_use: Callable[[], Any]
    ) -> list[Property]:
        use = f"an undeclared {flag.removeprefix('supports_')} use"
        return capability(flag, flags[flag], props, use, undeclared_use)

    props: list[Property] = [
        ("base", subclasses(cls, Attention)),
        ("shapes", shapes),
        ("need_weights", need_weights),
        ("weights_sum_to_1", weights_sum_to_1),
        ("gradients", gradients),
        ("determinism", determinism),
        ("permutation", permutation),
        *declared(
            "supports_padding",
            [("padding_mask", padding_mask), ("padding_invariance", padding_invariant)],
            attempt(key_padding_mask=lengths_mask([3, 2], 3)),
        ),
        *declared(
            "supports_causal",
            [("causal_mask", causal_mask), ("causal_future", causal_future)],
            attempt(causal=True),
        ),
        *declared("supports_cross", [("cross", cross)], lambda: cls.check_use(cross=True)),
        *declared(
            "supports_relative_posenc",
            [("relative_score_bias", relative_score_bias), ("relative_rotate", relative_rotate)],
            attempt(posenc=_ProbeEncoding(s.d, True, True)),
        ),
        *declared("supports_kv_cache", [("kv_cache", kv_cache)], attempt(kv_cache={})),
        ("causal_prefix", causal_prefix),
    ]
    if flags["needs_graph"]:
        props.append(("graph", graph))
        no_edges = lambda: s.call(s.build(), small, ctx=Ctx())  # noqa: E731
        props.append(("refuses_no_edges", refuses("a call without ctx.edges", no_edges)))
    else:
        props.append(("graph", skipped("does not declare needs_graph (attends every key)")))
    return props


def check_attention(cls: type, **params: Any) -> list[Check]:
    """The attention contract on ``cls`` (built with d_model=16, heads=2 unless given)."""
    s = _Subject(cls, params)
    return run_all(s.build, lambda _: _attention_properties(s))
