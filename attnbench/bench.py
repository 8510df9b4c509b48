"""Micro-benchmarks: ``attnbench bench attention`` times forward+backward and measures peak
memory of every registered attention variant over sequence lengths, next to two baselines:

  proj_ref         the same q/k/v/out projections with the attention step removed (q + k + v
                   keeps every projection in the backward pass): the floor no attention
                   variant can go below
  sdpa_ref         bare F.scaled_dot_product_attention behind the same q/k/v/out projections
  dense_ref        the same attention computed the textbook way, softmax(q·kᵀ/√d)·v with the
                   (B, h, N, N) scores materialised: what exact attention costs without a
                   fused kernel
  graph_dense_ref  graph attention through a dense boolean (B, 1, N, N) mask + SDPA

Time: the median of the timed forward+backward passes after ``--warmup`` passes: at least
``--repeats`` of them, and more until they add up to ``--min-time`` seconds (small sizes).
Peak memory: on CUDA, ``torch.cuda.max_memory_allocated`` above what was allocated before
the pass; on CPU, the profiler's allocation events (``profile_memory=True``): each carries
the running total of CPU tensor memory allocated since profiling began, and the peak is the
largest total seen during one pass (tensors that existed before it, such as the inputs and
weights, are not counted). Writes ``attention.csv``, ``attention.png``, ``ratios.json`` and
``targets.json`` (each ratio with a target in the config: its value, target and verdict).

Precision: ``--dtype bf16|fp16`` runs the pass under ``torch.autocast`` (as the
``bf16-mixed`` training presets do: fp32 weights, low-precision matmuls and attention);
``fp32`` runs it plainly. ``--compile`` wraps each variant's module in ``torch.compile``
(compilation happens in the warm-up passes, which --compile makes at least one).

TFLOP/s counts each variant's useful work, not what its kernel happens to compute: forward =
the q/k/v/out projections (8·B·N·d²) + the attention step, 4·h·dh per visited (query, key)
pair (q·k and weights·v, 2 FLOPs per multiply-add); forward+backward = 3 × forward (backward
does two matmuls per forward matmul; recomputation is not useful work). The visited pairs are
the config's ``work`` for the variant: dense (B·N², the default), window (each query's
keys within the variant's window, Σ over queries), edges (the edge list plus self-loops) or
projections (proj_ref: no attention step). "% peak" divides by the device's dense peak for
the dtype (DEVICE_PEAKS; n/a on a CPU or an unknown device).

Which ratios and probes are reported, and the variants' constructor parameters, come from the
benchmark's config, conf/bench/attention.yaml (``--config FILE`` for another): this module
names no attention plugin.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import ctypes
import gc
import json
import math
import os
import resource
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import MISSING, asdict, dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
import yaml
from torch import Tensor, nn

from attnbench import registry
from attnbench.config import NAME_KEY, plugin_params
from attnbench.nn.attention import merge_heads, split_heads
from attnbench.nn.ctx import Ctx
from attnbench.registry import ConfigError

if TYPE_CHECKING:  # for annotations only: importlib.resources.abc is Python 3.11+
    from importlib.resources.abc import Traversable

DEFAULT_SIZES = (256, 1024, 4096, 8192)


class SdpaRef(nn.Module):
    """The floor for exact attention: projections + one fused SDPA call, nothing else."""

    needs_graph = False  # as an Attention plugin declares it: whether ctx.edges is needed
    work = "dense"  # the (query, key) pairs its attention step visits: see WORK

    def __init__(self, d_model: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out = nn.Linear(d_model, d_model)

    def mask(self, ctx: Ctx, b: int, n: int, device: torch.device) -> Tensor | None:
        return None

    def forward(
        self, query: Tensor, key: Tensor, value: Tensor, *, ctx: Ctx, need_weights: bool = False
    ) -> tuple[Tensor, None]:
        q, k, v = (split_heads(t, self.heads) for t in self.qkv(query).chunk(3, dim=-1))
        y = self.attend(q, k, v, self.mask(ctx, q.size(0), q.size(2), q.device))
        return self.out(merge_heads(y)), None  # y: (B, h, N, hd)

    def attend(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None) -> Tensor:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


class ProjRef(SdpaRef):
    """The floor for every variant: the same projections, no attention step at all."""

    work = "projections"  # no attention step: only the projections count

    def attend(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None) -> Tensor:
        return q + k + v  # O(N·d); using q and k keeps their projections in the backward pass


class DenseRef(SdpaRef):
    """Exact attention with the N×N scores and weights stored (the eager formulation)."""

    def attend(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None) -> Tensor:
        scores = (q @ k.transpose(-2, -1)) / math.sqrt(q.size(-1))  # (B, h, N, N)
        return scores.softmax(dim=-1) @ v


class GraphDenseRef(SdpaRef):
    """Graph attention the O(N²) way: the edge list scattered into a dense boolean mask."""

    needs_graph = True
    work = "edges"  # the useful work is the edges, whatever the dense kernel computes

    def mask(self, ctx: Ctx, b: int, n: int, device: torch.device) -> Tensor:
        mask = torch.zeros(b * n, n, dtype=torch.bool, device=device)
        dst, src = ctx.edges
        mask[dst, src % n] = True
        mask.view(b, n, n).diagonal(dim1=1, dim2=2).fill_(True)  # self-loops, as graph adds
        return mask.view(b, 1, n, n)


REFERENCES: dict[str, type[SdpaRef]] = {
    "proj_ref": ProjRef,
    "sdpa_ref": SdpaRef,
    "dense_ref": DenseRef,
    "graph_dense_ref": GraphDenseRef,
}


def random_edges(
    b: int, n: int, degree: int, device: torch.device, generator: torch.Generator
) -> Tensor:
    """(2, E) long: each node attends ``degree`` random nodes of its own sample (unique)."""
    dst = torch.arange(b * n).repeat_interleave(degree)
    src = (dst // n) * n + torch.randint(0, n, dst.shape, generator=generator)
    flat = torch.unique(dst * (b * n) + src)
    return torch.stack([flat // (b * n), flat % (b * n)]).to(device)


@dataclass
class Row:
    variant: str
    n: int
    batch: int
    heads: int
    d_model: int
    time_ms: float = math.nan
    peak_mb: float = math.nan
    status: str = "ok"
    note: str = ""
    dtype: str = "fp32"
    tflops: float = math.nan  # useful forward+backward FLOPs / time (see the module doc)
    peak_fraction: float = math.nan  # tflops / the device's peak for dtype; NaN if unknown


# ----------------------------------------------------------------------------- the config

FIELDS = {"time_ms": "time", "peak_mb": "peak memory"}  # a Row field -> its name in a key
AT = ("each", "top", "growth")


@dataclass(frozen=True)
class Comparison:
    """numerator's field / denominator's, at every size (each) or the largest (top); growth:
    the numerator's field at the largest size / its own at the next-largest."""

    numerator: str
    field: str
    at: str
    denominator: str | None = None
    label: str | None = None  # the field's name in the key (default: FIELDS)
    max: float | None = None  # a target: the ratio must be <= max (PASS/FAIL in the table)
    min: float | None = None  # a target: the ratio must be >= min

    def evaluate(self, rows: list[Row], sizes: list[int]) -> dict[str, float]:
        label = self.label or FIELDS[self.field]
        top = max(sizes)
        if self.at == "growth":
            if len(set(sizes)) < 2:
                return {}
            prev = sorted(set(sizes))[-2]
            key = f"{self.numerator} {label} growth N={prev}->{top} (x{top / prev:g} length)"
            growth = _ratio(
                _get(rows, self.numerator, top, self.field),
                _get(rows, self.numerator, prev, self.field),
            )
            return {key: growth}
        return {
            f"{self.numerator}/{self.denominator} {label} @N={n}": _ratio(
                _get(rows, self.numerator, n, self.field),
                _get(rows, self.denominator, n, self.field),
            )
            for n in (sizes if self.at == "each" else [top])
        }


@dataclass(frozen=True)
class Probe:
    """One variant measured once at its own setting."""

    variant: str
    n: int
    d_model: int
    heads: int
    batch: int
    max_mb: float | None = None  # a target: its peak MiB must stay below this


@dataclass(frozen=True)
class Target:
    """A bound a reported value must meet: value <= max and/or value >= min (< for probes)."""

    max: float | None = None
    min: float | None = None
    strict: bool = False  # max is exclusive ("< 2 GB")

    def text(self) -> str:
        parts = [f"{'<' if self.strict else '<='} {self.max:g}"] if self.max is not None else []
        return " and ".join([*parts, *([f">= {self.min:g}"] if self.min is not None else [])])

    def verdict(self, value: float) -> str:
        if math.isnan(value):  # a variant that failed, ran out of memory or was skipped
            return "FAIL (not measured)"
        ok = self.max is None or (value < self.max if self.strict else value <= self.max)
        ok = ok and (self.min is None or value >= self.min)
        return "PASS" if ok else "FAIL"


# How each variant's visited (query, key) pairs are counted for TFLOP/s (see the module doc).
WORK = ("dense", "window", "edges", "projections")


@dataclass
class BenchConfig:
    params: dict[str, dict[str, Any]]  # variant -> constructor parameters
    comparisons: list[Comparison]
    probes: list[Probe]
    work: dict[str, str] = field(default_factory=dict)  # variant -> one of WORK (default dense)

    def targets(self, found: dict[str, float], sizes: list[int]) -> dict[str, Target]:
        """The target of each key in ``found`` that has one."""
        targets: dict[str, Target] = {}
        for c in self.comparisons:
            if c.max is not None or c.min is not None:
                keys = c.evaluate([], sizes)  # the keys this comparison reports (values NaN)
                targets.update({key: Target(c.max, c.min) for key in keys if key in found})
        for probe in self.probes:
            if probe.max_mb is not None:
                for key in found:
                    if key.startswith(f"{probe.variant} peak MiB @"):
                        targets[key] = Target(probe.max_mb, strict=True)
        return targets


def default_config() -> Traversable:
    return resources.files("attnbench.conf") / "bench" / "attention.yaml"


def _entry(cls: type, entry: Any, where: str) -> Any:
    """``cls(**entry)`` when entry is a mapping with exactly cls's keys, else a ConfigError."""
    if not isinstance(entry, dict):
        raise ConfigError(
            f"{where}: expected a mapping of {', '.join(f.name for f in fields(cls))}"
        )
    allowed = [f.name for f in fields(cls)]
    for key in entry:
        if key not in allowed:
            hint = registry.suggest(str(key), allowed).replace("available", "allowed")
            raise ConfigError(f"{where}: no key {key!r}; {hint}")
    missing = [f.name for f in fields(cls) if f.default is MISSING and f.name not in entry]
    if missing:
        raise ConfigError(f"{where}: missing {', '.join(missing)}")
    return cls(**entry)


def _known(name: Any, where: str) -> None:
    known = [*registry.available("attention"), *REFERENCES]
    if name not in known:
        raise ConfigError(
            f"{where}: unknown variant {name!r}; {registry.suggest(str(name), known)}"
        )


def _comparison(entry: Any, where: str) -> Comparison:
    c = _entry(Comparison, entry, where)
    if not isinstance(c.field, str) or c.field not in FIELDS:
        raise ConfigError(f"{where}: field {c.field!r} is not one of {', '.join(FIELDS)}")
    if c.at not in AT:
        raise ConfigError(f"{where}: at {c.at!r} is not one of {', '.join(AT)}")
    for bound in ("max", "min"):
        _number(getattr(c, bound), f"{where}: {bound}")
    if (c.at == "growth") != (c.denominator is None):
        raise ConfigError(f"{where}: give a denominator with at: each or top, none with growth")
    for name in (c.numerator, c.denominator):
        if name is not None:
            _known(name, where)
    return c


def _probe(entry: Any, where: str) -> Probe:
    probe = _entry(Probe, entry, where)
    _known(probe.variant, where)
    sizes = {"n": probe.n, "d_model": probe.d_model, "heads": probe.heads, "batch": probe.batch}
    for key, value in sizes.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ConfigError(f"{where}: {key} must be a positive integer, not {value!r}")
    if probe.d_model % probe.heads:
        raise ConfigError(f"{where}: d_model {probe.d_model} is not divisible by heads")
    _number(probe.max_mb, f"{where}: max_mb")
    return probe


def _number(value: Any, where: str) -> None:
    """A target bound: absent or a finite number."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if value is not None and not ok:
        raise ConfigError(f"{where} must be a number, not {value!r}")


def _work(entries: Any, where: str) -> dict[str, str]:
    if not isinstance(entries, dict):
        raise ConfigError(f"{where}: work maps a variant to one of {', '.join(WORK)}")
    for name, kind in entries.items():
        _known(name, f"{where}: work")
        if kind not in WORK:
            raise ConfigError(
                f"{where}: work of {name!r} is {kind!r}, not one of {', '.join(WORK)}"
            )
    return dict(entries)


def _check_params(name: str, params: dict[str, Any], where: str) -> None:
    if name in REFERENCES:
        if params:
            raise ConfigError(f"{where}: the reference {name!r} takes no parameters")
        return
    plugin_params("attention", {NAME_KEY: name, **params})


def load_config(path: Path | Traversable | None = None) -> BenchConfig:
    """The benchmark's config (conf/bench/attention.yaml unless ``path``), checked: every
    variant it names exists and every parameter is one its variant takes."""
    path = path or default_config()
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as e:
        raise ConfigError(f"bench config {path}: {e.strerror or e}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"bench config {path} is not valid YAML: {_one_line(e)}") from None
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise ConfigError(
            f"bench config {path}: expected a mapping of params, work, comparisons, probes"
        )
    for key in data:
        if key not in ("params", "work", "comparisons", "probes"):
            hint = registry.suggest(str(key), ["comparisons", "params", "probes", "work"])
            raise ConfigError(f"bench config {path}: unknown key {key!r}; {hint}")
    params = data.get("params") or {}
    if not isinstance(params, dict) or not all(isinstance(p, dict) for p in params.values()):
        raise ConfigError(f"bench config {path}: params maps a variant to {{parameter: value}}")
    for name, kv in params.items():
        _known(name, f"bench config {path}: params")
        _check_params(name, kv, f"bench config {path}: params")
    return BenchConfig(
        params={name: dict(kv) for name, kv in params.items()},
        comparisons=[
            _comparison(c, f"bench config {path}: comparisons[{i}]")
            for i, c in enumerate(data.get("comparisons") or [])
        ],
        probes=[
            _probe(c, f"bench config {path}: probes[{i}]")
            for i, c in enumerate(data.get("probes") or [])
        ],
        work=_work(data.get("work") or {}, f"bench config {path}"),
    )


def parse_param(text: str) -> tuple[str, str, Any]:
    """``NAME.KEY=VALUE`` -> (variant, parameter, value parsed as YAML: 32 is an int)."""
    target, eq, value = text.partition("=")
    name, dot, key = target.partition(".")
    if not (eq and dot and name and key):
        raise argparse.ArgumentTypeError(
            f"{text!r}: give VARIANT.PARAMETER=VALUE, a constructor parameter of a variant"
        )
    try:
        return name, key, yaml.safe_load(value)
    except yaml.YAMLError:
        return name, key, value


def variant_params(
    config: BenchConfig,
    variants: list[str],
    window: int | None,
    overrides: list[tuple[str, str, Any]],
) -> dict[str, dict[str, Any]]:
    """Constructor parameters of the benchmarked variants, later sources winning: the
    config's ``params``, ``--window`` (every variant with a window parameter), ``--param``."""
    params = {v: dict(config.params.get(v, {})) for v in variants}
    if window is not None:
        for v in variants:
            if v not in REFERENCES and "window" in registry.get("attention", v).options:
                params[v]["window"] = window
    for name, key, value in overrides:
        if name not in params:
            _known(name, f"--param {name}.{key}")
            raise ConfigError(f"--param {name}.{key}: {name!r} is not among the --variants")
        params[name][key] = value
        _check_params(name, params[name], f"--param {name}.{key}")
    return {v: kv for v, kv in params.items() if kv}


# ----------------------------------------------------------------------------- measuring


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextlib.contextmanager
def _quiet_stderr():
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def cpu_peak_bytes(fn: Callable[[], None]) -> float:
    """Peak CPU tensor memory allocated while fn runs (profiler allocation events)."""
    from torch._C._profiler import _EventType
    from torch.profiler import ProfilerActivity, profile

    prof = profile(activities=[ProfilerActivity.CPU], profile_memory=True)
    with _quiet_stderr():  # kineto logs a line to fd 2 at every start and stop
        prof.start()
    try:
        fn()
    finally:
        with _quiet_stderr():
            prof.stop()
    allocations, stack = [], list(prof.profiler.kineto_results.experimental_event_tree())
    while stack:
        event = stack.pop()
        stack.extend(event.children)
        if event.tag == _EventType.Allocation:
            allocations.append((event.start_time_ns, event.extra_fields))
    if not allocations:
        return 0.0
    allocations.sort(key=lambda a: a[0])
    # the running total carries over from earlier profiling; count from the first event on
    first = allocations[0][1]
    base = first.total_allocated - first.alloc_size
    return float(max(f.total_allocated for _, f in allocations) - base)


def peak_bytes(fn: Callable[[], None], device: torch.device) -> float:
    if device.type == "cuda":
        _sync(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        fn()
        _sync(device)
        return float(torch.cuda.max_memory_allocated(device) - base)
    try:
        return cpu_peak_bytes(fn)
    except Exception as e:  # the profiler's event tree is not a stable API; time still counts
        print(f"peak memory not measured: {_one_line(e)}", file=sys.stderr)
        return math.nan


DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}

# Dense peak TFLOP/s of known devices per dtype (vendor data sheets, no sparsity; fp32 is
# the CUDA-core rate, as torch's fp32 matmuls do not use TF32 unless asked). The first
# entry whose name is in torch.cuda.get_device_name() wins, so specific names come first.
DEVICE_PEAKS: dict[str, dict[str, float]] = {
    "H100 PCIe": {"bf16": 756.0, "fp16": 756.0, "fp32": 51.0},
    "H100": {"bf16": 989.0, "fp16": 989.0, "fp32": 67.0},
    "H200": {"bf16": 989.0, "fp16": 989.0, "fp32": 67.0},
    "A100": {"bf16": 312.0, "fp16": 312.0, "fp32": 19.5},
    "L40S": {"bf16": 362.0, "fp16": 362.0, "fp32": 91.6},
}


def device_peak(device: torch.device, dtype: str) -> float:
    """The device's dense peak TFLOP/s for dtype; NaN on a CPU or an unknown device."""
    if device.type != "cuda":
        return math.nan
    name = torch.cuda.get_device_name(device)
    for known, peaks in DEVICE_PEAKS.items():
        if known in name:
            return peaks.get(dtype, math.nan)
    return math.nan


def visited_pairs(work: str, n: int, batch: int, window: int, edges: Tensor | None) -> int:
    """(query, key) pairs the attention step visits, summed over the batch (see WORK)."""
    if work == "projections":
        return 0
    if work == "window":  # keys j with |i - j| <= window, cut at both ends of the sequence
        i = torch.arange(n)
        keys = (i + window).clamp(max=n - 1) - (i - window).clamp(min=0) + 1
        return batch * int(keys.sum())
    if work == "edges":  # the edge list plus a self-loop on every node that lacks one
        if edges is None:
            return 0
        return edges.size(1) + batch * n - int((edges[0] == edges[1]).sum())
    return batch * n * n


def train_flops(n: int, args: argparse.Namespace, pairs: int) -> float:
    """Useful forward+backward FLOPs: 3 × (projections + attention), see the module doc."""
    head_dim = args.d_model // args.heads
    projections = 8 * args.batch * n * args.d_model**2  # q, k, v, out: 2·B·N·d·d each
    attention = 4 * args.heads * pairs * head_dim  # q·k and weights·v per visited pair
    return 3.0 * (projections + attention)


def measure(
    module: nn.Module, n: int, args: argparse.Namespace, edges: Tensor | None, device: torch.device
) -> tuple[float, float, str]:
    """(median ms, peak MiB, note) of forward+backward at length n, in args.dtype."""
    g = torch.Generator().manual_seed(n)
    x = torch.randn(args.batch, n, args.d_model, generator=g).to(device).requires_grad_()
    grad_out = torch.randn(args.batch, n, args.d_model, generator=g).to(device)
    ctx = Ctx(edges=edges)
    dtype = DTYPES[getattr(args, "dtype", None) or "fp32"]
    grad_out = grad_out.to(dtype)  # autocast's output dtype: no cast inside the timed pass

    def step() -> None:
        with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            out, _ = module(x, x, x, ctx=ctx)
        out.backward(grad_out.to(out.dtype))

    def clear() -> None:
        module.zero_grad(set_to_none=True)
        x.grad = None

    times: list[float] = []
    passes = 0
    warmup = max(args.warmup, 1) if getattr(args, "compile", False) else args.warmup
    while len(times) < args.repeats or sum(times) < args.min_time:
        clear()
        _sync(device)
        start = time.perf_counter()
        step()
        _sync(device)
        seconds = time.perf_counter() - start
        passes += 1
        if passes > warmup:
            times.append(seconds)
        if seconds > args.time_limit:  # too slow to repeat: report the one pass
            times = times or [seconds]
            break
    note = f"{len(times)} pass(es): over --time-limit" if len(times) < args.repeats else ""
    clear()
    peak = peak_bytes(step, device)
    return statistics.median(times) * 1e3, peak / 2**20, note


def build_variant(name: str, args: argparse.Namespace) -> nn.Module:
    """A reference, or the attention plugin with its parameters from ``args.params``."""
    if name in REFERENCES:
        return REFERENCES[name](args.d_model, args.heads)
    params = args.params.get(name, {})
    return registry.build("attention", name, d_model=args.d_model, heads=args.heads, **params)


def variant_work(name: str, args: argparse.Namespace) -> tuple[str, int]:
    """(how the variant's visited pairs are counted, its window or 0)."""
    if name in REFERENCES:
        return REFERENCES[name].work, 0
    work = getattr(args, "work", {}).get(name, "dense")
    if work != "window":
        return work, 0
    window = args.params.get(name, {}).get("window")
    if window is None:
        window = registry.get("attention", name).options.get("window")
    if not isinstance(window, int):
        raise ConfigError(
            f"bench config: work of {name!r} is window but it has no integer window "
            "parameter; give it one under params or count it as dense"
        )
    return work, window


def needs_edges(name: str) -> bool:
    cls = REFERENCES[name] if name in REFERENCES else registry.get("attention", name).cls
    return bool(cls.needs_graph)


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:140] if text else ''}"


def compiled(module: nn.Module, args: argparse.Namespace) -> nn.Module:
    """``torch.compile(module)`` under --compile; each size compiles afresh."""
    if not getattr(args, "compile", False):
        return module
    torch._dynamo.reset()  # a new module per size: no recompilation limit to reach
    return torch.compile(module)


def run_variant(name: str, args: argparse.Namespace, device: torch.device) -> list[Row]:
    rows, stop = [], ""
    dtype = getattr(args, "dtype", None) or "fp32"
    for n in args.sizes:
        row = Row(name, n, args.batch, args.heads, args.d_model, dtype=dtype)
        rows.append(row)
        if stop:
            row.status, row.note = "skipped", stop
            continue
        try:
            torch.manual_seed(0)
            module = compiled(build_variant(name, args).to(device).train(), args)
            edges = None
            if needs_edges(name):
                gen = torch.Generator().manual_seed(1)
                edges = random_edges(args.batch, n, args.degree, device, gen)
            row.time_ms, row.peak_mb, row.note = measure(module, n, args, edges, device)
            work, window = variant_work(name, args)
            pairs = visited_pairs(work, n, args.batch, window, edges)
            row.tflops = train_flops(n, args, pairs) / (row.time_ms * 1e-3) / 1e12
            row.peak_fraction = row.tflops / device_peak(device, dtype)
            if row.note:
                stop = f"N={n} was over --time-limit={args.time_limit:g}s"
        except Exception as e:  # a failing variant gets a row saying why; the rest go on
            row.status, row.note = "failed", _one_line(e)
            stop = f"failed at N={n}"
        finally:
            module = edges = None
            gc.collect()
            if device.type == "cuda":
                torch.cuda.empty_cache()
    return rows


# ----------------------------------------------------------------------------- reporting


def _get(rows: list[Row], variant: str, n: int, field: str) -> float:
    for r in rows:
        if r.variant == variant and r.n == n and r.status == "ok":
            return getattr(r, field)
    return math.nan


def _ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator else math.nan


def ratios(
    rows: list[Row], sizes: list[int], comparisons: list[Comparison], extra: dict[str, float]
) -> dict[str, float]:
    """The config's comparisons, in its order, then ``extra`` (NaN where a variant is missing)."""
    found: dict[str, float] = {}
    for comparison in comparisons:
        found.update(comparison.evaluate(rows, sizes))
    found.update(extra)
    return found


def run_probe(probe: Probe, args: argparse.Namespace, device: torch.device) -> dict[str, float]:
    """One variant's peak memory and time at the probe's own setting, from one pass; N is
    capped at the largest benchmarked size."""
    n = min(probe.n, max(args.sizes))
    setting = argparse.Namespace(
        **{
            **vars(args),
            "d_model": probe.d_model,
            "heads": probe.heads,
            "batch": probe.batch,
            "warmup": 0,
            "repeats": 1,
            "min_time": 0.0,
            "compile": False,
        }
    )
    tag = f"@N={n},d={probe.d_model},B={probe.batch},h={probe.heads}"
    key = f"{probe.variant} peak MiB {tag}"
    try:
        torch.manual_seed(0)
        module = build_variant(probe.variant, setting).to(device).train()
        edges = None
        if needs_edges(probe.variant):
            gen = torch.Generator().manual_seed(1)
            edges = random_edges(probe.batch, n, args.degree, device, gen)
        ms, mb, _ = measure(module, n, setting, edges, device)
        return {key: mb, f"{probe.variant} fwd+bwd ms {tag}": ms}
    except Exception as e:
        print(f"{probe.variant} probe failed: {_one_line(e)}", file=sys.stderr)
        return {key: math.nan}


def run_probes(
    probes: list[Probe], variants: list[str], args: argparse.Namespace, device: torch.device
) -> dict[str, float]:
    """The probes of the benchmarked variants (a probe of a variant not run is skipped)."""
    found: dict[str, float] = {}
    for probe in probes:
        if probe.variant in variants:
            found.update(run_probe(probe, args, device))
    return found


def _params_text(params: dict[str, dict[str, Any]]) -> str:
    """``name.key=value, `` for every variant parameter set (empty when none is)."""
    return "".join(f"{v}.{k}={value}, " for v, kv in params.items() for k, value in kv.items())


def _device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else str(device)


def _fmt(value: float, spec: str) -> str:
    return "n/a" if math.isnan(value) else format(value, spec)


# The references every row's time is divided by, when they were run (beside the config's ratios)
BESIDE = ("proj_ref", "sdpa_ref")


def print_table(
    rows: list[Row],
    found: dict[str, float],
    args: argparse.Namespace,
    targets: dict[str, Target] | None = None,
) -> None:
    from rich.console import Console
    from rich.table import Table

    device = torch.device(args.device)
    console = Console(width=max(120, Console().width))
    table = Table(
        title=f"attention forward+backward on {_device_name(device)}, "
        f"{torch.get_num_threads()} thread(s), {args.dtype}"
        f"{', torch.compile' if args.compile else ''} (batch={args.batch}, "
        f"heads={args.heads}, d_model={args.d_model}, {_params_text(args.params)}"
        f"degree={args.degree}, median of >= {args.repeats} passes "
        f"and >= {args.min_time:g} s)",
        caption="TFLOP/s: useful work only, 3 × forward (q/k/v/out projections 8·B·N·d² + "
        "4·h·dh per visited (query, key) pair: N² dense, the window's keys, the edges + "
        "self-loops; proj_ref: projections only) / time; % peak: of the device's dense "
        f"{args.dtype} peak (n/a on a CPU or a device not in DEVICE_PEAKS). ÷ ref: time / "
        "the reference's at the same N.",
    )
    beside = [ref for ref in BESIDE if any(r.variant == ref for r in rows)]
    columns = ["variant", "N", "fwd+bwd ms", "TFLOP/s", "% peak", "peak MiB"]
    columns += [f"÷ {ref}" for ref in beside] + ["note"]
    for col in columns:
        table.add_column(col, justify="left" if col in ("variant", "note") else "right")
    for r in rows:
        note = r.note if r.status == "ok" else f"{r.status}: {r.note}"
        cells = [r.variant, str(r.n), f"{r.time_ms:.1f}", _fmt(r.tflops, ".3g")]
        cells += [_fmt(100 * r.peak_fraction, ".1f"), f"{r.peak_mb:.1f}"]
        cells += [_fmt(_ratio(r.time_ms, _get(rows, ref, r.n, "time_ms")), ".3g") for ref in beside]
        table.add_row(*cells, note)
    console.print(table)
    targets = targets or {}
    ratio_table = Table(title="ratios")
    ratio_table.add_column("comparison")
    ratio_table.add_column("value", justify="right")
    if targets:
        ratio_table.add_column("target", justify="right")
        ratio_table.add_column("verdict")
    for key, value in found.items():
        target = targets.get(key)
        extra = [target.text(), target.verdict(value)] if target else ["", ""]
        ratio_table.add_row(key, f"{value:.3g}", *(extra if targets else []))
    console.print(ratio_table)


def write_outputs(
    rows: list[Row],
    found: dict[str, float],
    out: Path,
    targets: dict[str, Target] | None = None,
) -> None:
    out.mkdir(parents=True, exist_ok=True)
    verdicts = {
        key: {
            "value": None if math.isnan(found[key]) else found[key],
            "target": target.text(),
            "verdict": target.verdict(found[key]),
        }
        for key, target in (targets or {}).items()
    }
    (out / "targets.json").write_text(json.dumps(verdicts, indent=2) + "\n")
    with open(out / "attention.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(asdict(rows[0])))
        writer.writeheader()
        writer.writerows(asdict(r) for r in rows)
    (out / "ratios.json").write_text(
        json.dumps({k: (None if math.isnan(v) else v) for k, v in found.items()}, indent=2) + "\n"
    )

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for variant in dict.fromkeys(r.variant for r in rows):
        ok = [r for r in rows if r.variant == variant and r.status == "ok"]
        if not ok:
            continue
        style = "--" if variant in REFERENCES else "-"
        ns = [r.n for r in ok]
        axes[0].plot(ns, [r.time_ms for r in ok], style, marker="o", label=variant)
        axes[1].plot(ns, [r.peak_mb for r in ok], style, marker="o", label=variant)
    for ax, ylabel in zip(axes, ("forward+backward time (ms)", "peak memory (MiB)")):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("sequence length N")
        ax.set_ylabel(ylabel)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "attention.png", dpi=120)
    plt.close(fig)


# ----------------------------------------------------------------------------- CLI


def _ints(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a comma-separated list of integers, e.g. 256,1024"
        ) from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: give positive sizes, e.g. 256,1024")
    return values


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="attnbench bench",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("what", choices=["attention"], help="what to benchmark")
    p.add_argument(
        "--variants",
        default="",
        help="comma-separated attention names and/or the references proj_ref, sdpa_ref, "
        "dense_ref, graph_dense_ref (default: every registered attention plugin and "
        "every reference)",
    )
    p.add_argument(
        "--sizes",
        type=_ints,
        default=list(DEFAULT_SIZES),
        help="sequence lengths N (default 256,1024,4096,8192)",
    )
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--d-model", type=int, default=128)
    p.add_argument(
        "--window",
        type=int,
        default=None,
        help="window of every variant that takes one (default: the config's params)",
    )
    p.add_argument(
        "--param",
        type=parse_param,
        action="append",
        default=[],
        metavar="VARIANT.PARAMETER=VALUE",
        help="a variant's constructor parameter, e.g. truncated.window=32 (repeatable; "
        "overrides the config and --window)",
    )
    p.add_argument(
        "--config",
        type=Path,
        default=None,
        metavar="FILE",
        help="YAML with the ratios, probes and variant parameters to use "
        "(default: attnbench's conf/bench/attention.yaml)",
    )
    p.add_argument("--degree", type=int, default=8, help="average degree of the random graph")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument(
        "--dtype",
        choices=list(DTYPES),
        default=None,
        help="precision of the pass: bf16/fp16 under torch.autocast as the *-mixed training "
        "presets run, fp32 plain (default: bf16 on CUDA, fp32 on CPU)",
    )
    p.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile each variant's module (compiled in >= 1 warm-up pass)",
    )
    p.add_argument("--repeats", type=int, default=3, help="timed passes at least (median reported)")
    p.add_argument(
        "--min-time",
        type=float,
        default=0.5,
        help="seconds: time more passes until they add up to this much",
    )
    p.add_argument("--warmup", type=int, default=1, help="untimed passes before timing")
    p.add_argument(
        "--time-limit",
        type=float,
        default=60.0,
        help="seconds; a pass slower than this stops that variant's larger sizes",
    )
    p.add_argument(
        "--mem-limit-gb",
        type=float,
        default=8.0,
        help="CPU: cap on extra address space, so a variant that would exhaust "
        "the machine fails with a row instead (0 = no cap)",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=0,
        help="torch intra-op threads (0 = torch's default); 1 gives steadier "
        "CPU timings on a shared machine",
    )
    p.add_argument(
        "--malloc",
        choices=["keep", "default"],
        default="keep",
        help="CPU: keep freed memory in the process between passes (default; "
        "glibc otherwise re-faults large buffers each pass; set for the rest "
        "of the process) or leave glibc's defaults",
    )
    p.add_argument("--out", type=Path, default=Path("bench_results"))
    p.set_defaults(params={})  # resolved by main from the config, --window and --param
    return p


def _limit_memory(gb: float) -> Callable[[], None]:
    """Cap the address space at current + gb (Linux); returns the undo."""
    try:
        status = Path("/proc/self/status").read_text()
        vm_kb = next(
            int(line.split()[1]) for line in status.splitlines() if line.startswith("VmSize:")
        )
        soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        cap = vm_kb * 1024 + int(gb * 2**30)
        if hard != resource.RLIM_INFINITY:
            cap = min(cap, hard)
        resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    except (OSError, StopIteration, ValueError):
        return lambda: None
    return lambda: resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def keep_freed_memory() -> bool:
    """glibc: keep freed memory in the process instead of handing it back after every pass,
    as PyTorch's caching allocator does on a GPU. Otherwise glibc's dynamic thresholds trim
    and page-fault some buffers of a few MiB again each pass, depending on their size, which
    adds size-dependent jumps to the timings of the O(N) variants."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc: nothing to tune
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # from malloc.h
    return bool(
        libc.mallopt(m_mmap_threshold, 32 << 20)  # the largest glibc accepts
        and libc.mallopt(m_trim_threshold, 2**31 - 1)
    )


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise registry.ConfigError(
            "--device cuda but no CUDA device is available; use --device cpu"
        )
    if args.d_model % args.heads:
        raise registry.ConfigError(
            f"--d-model {args.d_model} is not divisible by --heads "
            f"{args.heads}; pick heads that divide d_model"
        )
    if args.threads:
        torch.set_num_threads(args.threads)
    if device.type == "cpu" and args.malloc == "keep" and not keep_freed_memory():
        print(
            "--malloc keep: glibc's mallopt not available or refused; allocator left as it is",
            file=sys.stderr,
        )
    known = [*registry.available("attention"), *REFERENCES]
    variants = [v.strip() for v in args.variants.split(",") if v.strip()] or known
    for v in variants:
        if v not in known:
            raise registry.UnknownPluginError(
                f"unknown --variants entry {v!r}; {registry.suggest(v, known)}"
            )
    config = load_config(args.config)
    args.params = variant_params(config, variants, args.window, args.param)
    args.work = config.work
    args.dtype = args.dtype or ("bf16" if device.type == "cuda" else "fp32")

    undo = _limit_memory(args.mem_limit_gb) if device.type == "cpu" and args.mem_limit_gb else None
    try:
        rows = []
        for v in variants:
            print(f"benchmarking {v} ...", file=sys.stderr, flush=True)
            rows += run_variant(v, args, device)
        extra = run_probes(config.probes, variants, args, device)
    finally:
        if undo is not None:
            undo()
    found = ratios(rows, args.sizes, config.comparisons, extra)
    targets = config.targets(found, args.sizes)
    print_table(rows, found, args, targets)
    write_outputs(rows, found, args.out, targets)
    print(
        f"wrote {args.out / 'attention.csv'}, {args.out / 'attention.png'}, "
        f"{args.out / 'ratios.json'} and {args.out / 'targets.json'}"
    )
