"""The task contract: set up once, one deterministic batch of each split through the task's
embedder, an identity backbone and its head; what the embedder puts in ctx matches what the
task declares; a finite scalar loss with gradients; metrics and the monitored name."""

from __future__ import annotations

import contextlib
import tempfile
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from attnbench.nn.attention import Attention
from attnbench.nn.ctx import Ctx
from attnbench.task import Network, Task
from attnbench.testing._core import (
    SEED,
    Check,
    D,
    Failed,
    Property,
    assert_finite,
    assert_shape,
    construct,
    run_all,
    seeded,
)
from attnbench.testing._properties import subclasses

SPLITS = ("train", "val", "test")


class _SoftmaxAttention(Attention):
    """Plain softmax(q k^T / sqrt(d)) v without parameters, for tasks that pool with the
    model's attention layer (Task.needs_attention): the stand-in backbone must own one."""

    supports_cross = True

    def forward(self, q: Tensor, k: Tensor, v: Tensor, *, ctx=None, need_weights=False):
        # written out, not SDPA: the task may ask for the weights, which SDPA does not return
        w = torch.softmax(q @ k.transpose(1, 2) / self.head_dim**0.5, dim=-1)  # (B, Nq, Nk)
        return w @ v, (w.unsqueeze(1) if need_weights else None)  # (B, Nq, d), (B, 1, Nq, Nk)


class _Identity(nn.Module):
    """A backbone stand-in that changes nothing, so a task's pieces are checked alone; it
    holds one attention layer when the task pools with the model's (needs_attention)."""

    def __init__(self, d_model: int, attention: bool = False):
        super().__init__()
        self.d_model = d_model
        self.attention = _SoftmaxAttention(d_model, 1) if attention else None

    def forward(self, x: Tensor, ctx: Ctx) -> Tensor:
        return x

    def encode(self, x: Tensor, ctx: Ctx) -> Tensor:
        return x

    def decode(self, y: Tensor, memory: Tensor, src_ctx: Ctx, cache: dict | None = None):
        return y, dict(cache or {})


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


def check_task(cls: type, **params: Any) -> list[Check]:
    """The task contract on ``cls``: built with a temporary data_dir (built-in data) unless
    ``data_dir`` is given, set up once, one batch of each split through its embedder, an
    identity backbone and its head, loss and metrics."""
    with contextlib.ExitStack() as stack:
        if "data_dir" not in params:
            params["data_dir"] = stack.enter_context(tempfile.TemporaryDirectory())
        build = lambda: seeded(lambda: construct("task", cls, {}, params))  # noqa: E731
        return run_all(build, lambda task: _task_properties(cls, task))


def _task_properties(cls: type, task: Task) -> list[Property]:
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

    def net() -> Network:
        if "net" not in state:
            torch.manual_seed(SEED)
            state["net"] = Network(
                task.build_embedder(D),
                _Identity(D, attention=bool(getattr(task, "needs_attention", False))),
                task.build_head(D),
            )
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
            assert_finite(x, f"{split} embeddings")
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
            assert_shape(p, (b, n, 2), "ctx.positions of a grid task")
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
        assert_shape(mask, (b, n), "ctx.key_padding_mask")
        if mask.dtype != torch.bool:
            raise Failed(f"ctx.key_padding_mask is {mask.dtype}, not bool")
        return f"pads, key_padding_mask {(b, n)} bool"

    def loss() -> str:
        found = needs_batches()
        model = net().train()
        outputs = task.forward(model, found["train"], "train")
        value = task.loss(outputs, found["train"])
        if not (isinstance(value, Tensor) and value.dim() == 0):
            raise Failed(f"loss is {getattr(value, 'shape', type(value).__name__)}, not a scalar")
        assert_finite(value, "loss")
        value.backward()
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        if not grads:
            raise Failed("the loss gives the embedder and head no gradient")
        for g in grads:
            assert_finite(g, "a parameter gradient")
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
                outputs = task.forward(model, found[split], split)
                for t in _floats(outputs):
                    assert_finite(t, f"{split} outputs")
                task.loss(outputs, found[split])
                inputs = task.metric_inputs(outputs, found[split])
            for metric in made.values():
                metric.update(*inputs)
        for name, metric in made.items():
            value = torch.as_tensor(metric.compute())
            assert_finite(value, f"metric {name}")
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

    return [
        ("base", subclasses(cls, Task)),
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
