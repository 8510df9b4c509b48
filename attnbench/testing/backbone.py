"""The backbone (``model``) contract: d_model, shapes, gradients, determinism, and each
declared kind of task served (padded batches, graphs, patch grids, seq2seq decoding) or
refused by ``check_task``."""

from __future__ import annotations

import types
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from attnbench import registry
from attnbench.config import default_plugins
from attnbench.nn.backbone import TASK_NEEDS, Backbone
from attnbench.nn.ctx import Ctx
from attnbench.registry import ConfigError
from attnbench.testing._core import (
    B,
    Check,
    D,
    Failed,
    N,
    Property,
    Skipped,
    assert_close,
    assert_output,
    assert_shape,
    build_module,
    one_line,
    run_all,
    takes,
)
from attnbench.testing._inputs import flat_edges, lengths_mask, randn, random_graphs
from attnbench.testing._properties import (
    capability,
    equivariant,
    finite_gradients,
    padding_invariance,
    reproducible,
    subclasses,
)


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
    takes them, conf/config.yaml's default attention and posenc (``attention=`` and
    ``posenc=`` take another registered name, or a factory)."""
    d = int(params.pop("d_model", D))
    chosen = default_plugins()  # conf/config.yaml's: the core names no plugin
    attention, attention_cls = _factory("attention", params.pop("attention", chosen["attention"]))
    posenc, posenc_cls = _factory("posenc", params.pop("posenc", chosen["posenc"]))
    supplied: dict[str, Any] = {"d_model": d, "attention": attention, "posenc": posenc}
    uses_attention = attention_cls is not None and takes(cls, "attention")
    if uses_attention:  # a combination the harness would refuse is bad input, as there
        relative = bool(posenc_cls is not None and posenc_cls.relative and takes(cls, "posenc"))
        attention_cls.check_use(relative_posenc=relative)

    def serves(**uses: bool) -> None:
        """Skip a task structure the chosen attention cannot serve (not the backbone's fault)."""
        if uses_attention:
            try:
                attention_cls.check_use(**uses)
            except ConfigError as e:
                raise Skipped(f"the chosen attention cannot serve it ({one_line(e)})") from None

    flags = {flag: bool(getattr(cls, flag, False)) for flag in TASK_NEEDS}

    def build(**task_flags: bool) -> nn.Module:
        task = {"task": stub_task(**task_flags)}
        return build_module("model", cls, {**supplied, **task}, params)

    x = randn(B, N, d, seed=1)

    def d_model() -> str:
        got = getattr(build(), "d_model", None)
        if got != d:
            raise Failed(f"d_model is {got!r}, built with {d}")
        return f"d_model == {d}"

    def shapes() -> str:
        out = build()(x, Ctx())
        assert_output(out, (B, N, d), "output")
        return f"{(B, N, d)} -> {tuple(out.shape)}"

    def gradients() -> str:
        model = build()
        xg = x.clone().requires_grad_(True)
        (model(xg, Ctx()) * randn(B, N, d, seed=9)).sum().backward()
        return finite_gradients(model, [xg])

    def determinism() -> str:
        return reproducible(build(), build(), lambda model: model(x, Ctx()))

    def padding_invariant() -> str:
        serves(padding=True)
        model = build()

        def padded(xp: Tensor, mask: Tensor) -> Tensor:
            return model(xp, Ctx(key_padding_mask=mask))

        def alone(b: int, length: int) -> Tensor:
            return model(x[b : b + 1, :length], Ctx())

        return padding_invariance(x, [N, N - 3], N + 2, padded, alone)

    def graph() -> str:
        serves(graph=True)
        model = build(gives_edges=True)
        zeros = torch.zeros(B, N, dtype=torch.long)  # graph tasks give nodes no order

        def run(x: Tensor, graphs: list[Tensor]) -> Tensor:
            return model(x, Ctx(positions=zeros, edges=flat_edges(graphs, N)))

        what = "permuting the nodes does not permute the output"
        return equivariant(run, x, random_graphs(), what)

    def grid() -> str:
        model = build(grid=True)
        rows, cols = 2, 3
        r, c = torch.meshgrid(torch.arange(rows), torch.arange(cols), indexing="ij")
        positions = torch.stack([r.flatten(), c.flatten()], -1).expand(B, -1, -1)  # (B, 6, 2)
        out = model(randn(B, rows * cols, d, seed=6), Ctx(positions=positions))
        assert_output(out, (B, rows * cols, d), "output on a 2x3 patch grid")
        return f"2x3 grid (ctx.positions (B, 6, 2)) -> {tuple(out.shape)}"

    def seq2seq() -> str:
        serves(causal=True, cross=True, padding=flags["supports_padding"])
        model = build(seq2seq=True)
        src = randn(B, N + 1, d, seed=7)
        mask = lengths_mask([N + 1, N - 1], N + 1) if flags["supports_padding"] else None
        src_ctx = Ctx(key_padding_mask=mask)
        memory = model.encode(src, src_ctx)
        assert_shape(memory, (B, N + 1, d), "encode output")
        y = randn(B, N, d, seed=8)
        full, _ = model.decode(y, memory, src_ctx)
        assert_shape(full, (B, N, d), "decode output")
        cache, steps = None, []
        for t in range(N):
            h, cache = model.decode(y[:, t : t + 1], memory, src_ctx, cache)
            steps.append(h)
        detail = assert_close(torch.cat(steps, 1), full, "step-wise decoding with the cache")
        return f"step-wise == teacher-forced decode, {detail}"

    def declared(flag: str, name: str, prop: Callable[[], str]) -> list[Property]:
        asks = TASK_NEEDS[flag][0]  # the task attribute that asks for this capability
        refused = lambda: cls.check_task(stub_task(**{asks: True}))  # noqa: E731
        return capability(flag, flags[flag], [(name, prop)], f"a task with {asks}=True", refused)

    props: list[Property] = [
        ("base", subclasses(cls, Backbone)),
        ("d_model", d_model),
        ("shapes", shapes),
        ("gradients", gradients),
        ("determinism", determinism),
        *declared("supports_padding", "padding_invariance", padding_invariant),
        *declared("supports_graph", "graph", graph),
        *declared("supports_grid", "grid", grid),
        *declared("supports_seq2seq", "seq2seq", seq2seq),
    ]
    return run_all(build, lambda _: props)
