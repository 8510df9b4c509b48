"""Micro-benchmarks: ``attnbench bench attention`` times forward+backward and measures peak
memory of every registered attention variant over sequence lengths, next to two baselines:

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
weights, are not counted). Writes ``attention.csv``, ``attention.png`` and ``ratios.json``.
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
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnbench import registry
from attnbench.nn.attention import merge_heads, split_heads
from attnbench.nn.ctx import Ctx

REFERENCES = ("sdpa_ref", "dense_ref", "graph_dense_ref")
DEFAULT_SIZES = (256, 1024, 4096, 8192)


class SdpaRef(nn.Module):
    """The floor for exact attention: projections + one fused SDPA call, nothing else."""

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


class DenseRef(SdpaRef):
    """Exact attention with the N×N scores and weights stored (the eager formulation)."""

    def attend(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None) -> Tensor:
        scores = (q @ k.transpose(-2, -1)) / math.sqrt(q.size(-1))  # (B, h, N, N)
        return scores.softmax(dim=-1) @ v


class GraphDenseRef(SdpaRef):
    """Graph attention the O(N²) way: the edge list scattered into a dense boolean mask."""

    def mask(self, ctx: Ctx, b: int, n: int, device: torch.device) -> Tensor:
        mask = torch.zeros(b * n, n, dtype=torch.bool, device=device)
        dst, src = ctx.edges
        mask[dst, src % n] = True
        mask.view(b, n, n).diagonal(dim1=1, dim2=2).fill_(True)  # self-loops, as graph adds
        return mask.view(b, 1, n, n)


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


def measure(
    module: nn.Module, n: int, args: argparse.Namespace, edges: Tensor | None, device: torch.device
) -> tuple[float, float, str]:
    """(median ms, peak MiB, note) of forward+backward at length n."""
    g = torch.Generator().manual_seed(n)
    x = torch.randn(args.batch, n, args.d_model, generator=g).to(device).requires_grad_()
    grad_out = torch.randn(args.batch, n, args.d_model, generator=g).to(device)
    ctx = Ctx(edges=edges)

    def step() -> None:
        out, _ = module(x, x, x, ctx=ctx)
        out.backward(grad_out)

    def clear() -> None:
        module.zero_grad(set_to_none=True)
        x.grad = None

    times: list[float] = []
    passes = 0
    while len(times) < args.repeats or sum(times) < args.min_time:
        clear()
        _sync(device)
        start = time.perf_counter()
        step()
        _sync(device)
        seconds = time.perf_counter() - start
        passes += 1
        if passes > args.warmup:
            times.append(seconds)
        if seconds > args.time_limit:  # too slow to repeat: report the one pass
            times = times or [seconds]
            break
    note = f"{len(times)} pass(es): over --time-limit" if len(times) < args.repeats else ""
    clear()
    peak = peak_bytes(step, device)
    return statistics.median(times) * 1e3, peak / 2**20, note


def build_variant(name: str, args: argparse.Namespace) -> nn.Module:
    if name == "sdpa_ref":
        return SdpaRef(args.d_model, args.heads)
    if name == "dense_ref":
        return DenseRef(args.d_model, args.heads)
    if name == "graph_dense_ref":
        return GraphDenseRef(args.d_model, args.heads)
    plugin = registry.get("attention", name)
    params: dict[str, Any] = {}
    if "window" in plugin.options:
        params["window"] = args.window
    return registry.build("attention", name, d_model=args.d_model, heads=args.heads, **params)


def needs_edges(name: str) -> bool:
    if name in REFERENCES:
        return name == "graph_dense_ref"
    return bool(registry.get("attention", name).cls.needs_graph)


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:140] if text else ''}"


def run_variant(name: str, args: argparse.Namespace, device: torch.device) -> list[Row]:
    rows, stop = [], ""
    for n in args.sizes:
        row = Row(name, n, args.batch, args.heads, args.d_model)
        rows.append(row)
        if stop:
            row.status, row.note = "skipped", stop
            continue
        try:
            torch.manual_seed(0)
            module = build_variant(name, args).to(device).train()
            edges = None
            if needs_edges(name):
                gen = torch.Generator().manual_seed(1)
                edges = random_edges(args.batch, n, args.degree, device, gen)
            row.time_ms, row.peak_mb, row.note = measure(module, n, args, edges, device)
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


def ratios(rows: list[Row], sizes: list[int], extra: dict[str, float]) -> dict[str, float]:
    """The comparisons the benchmark exists for (NaN where a variant is missing)."""
    top = max(sizes)
    found: dict[str, float] = {}
    for v in ("dot", "multihead"):
        for n in sizes:
            found[f"{v}/sdpa_ref time @N={n}"] = _get(rows, v, n, "time_ms") / _get(
                rows, "sdpa_ref", n, "time_ms"
            )
    found[f"dot/truncated time (speed-up) @N={top}"] = _get(rows, "dot", top, "time_ms") / _get(
        rows, "truncated", top, "time_ms"
    )
    for ref in ("dot", "dense_ref"):
        found[f"truncated/{ref} peak memory @N={top}"] = _get(
            rows, "truncated", top, "peak_mb"
        ) / _get(rows, ref, top, "peak_mb")
    if len(sizes) > 1:
        prev = sorted(sizes)[-2]
        found[f"truncated time growth N={prev}->{top} (x{top / prev:g} length)"] = _get(
            rows, "truncated", top, "time_ms"
        ) / _get(rows, "truncated", prev, "time_ms")
    found[f"graph_dense_ref/graph time (speed-up) @N={top}"] = _get(
        rows, "graph_dense_ref", top, "time_ms"
    ) / _get(rows, "graph", top, "time_ms")
    found[f"graph_dense_ref/graph peak memory @N={top}"] = _get(
        rows, "graph_dense_ref", top, "peak_mb"
    ) / _get(rows, "graph", top, "peak_mb")
    found.update(extra)
    return found


def additive_probe(args: argparse.Namespace, device: torch.device) -> dict[str, float]:
    """additive's peak memory at the issue's setting: N=4096, d=64, batch 1, 1 head."""
    n = 4096 if max(args.sizes) >= 4096 else max(args.sizes)
    probe = argparse.Namespace(
        **{
            **vars(args),
            "d_model": 64,
            "heads": 1,
            "batch": 1,
            "warmup": 0,
            "repeats": 1,
            "min_time": 0.0,
        }
    )
    key = f"additive peak MiB @N={n},d=64,B=1,h=1"
    try:
        torch.manual_seed(0)
        module = build_variant("additive", probe).to(device).train()
        ms, mb, _ = measure(module, n, probe, None, device)
        return {key: mb, f"additive fwd+bwd ms @N={n},d=64,B=1,h=1": ms}
    except Exception as e:
        print(f"additive probe failed: {_one_line(e)}", file=sys.stderr)
        return {key: math.nan}


def print_table(rows: list[Row], found: dict[str, float], args: argparse.Namespace) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=max(120, Console().width))
    table = Table(
        title=f"attention forward+backward on {args.device}, "
        f"{torch.get_num_threads()} thread(s) (batch={args.batch}, "
        f"heads={args.heads}, d_model={args.d_model}, window={args.window}, "
        f"degree={args.degree}, median of >= {args.repeats} passes "
        f"and >= {args.min_time:g} s)"
    )
    for col, just in (
        ("variant", "left"),
        ("N", "right"),
        ("fwd+bwd ms", "right"),
        ("peak MiB", "right"),
        ("note", "left"),
    ):
        table.add_column(col, justify=just)
    for r in rows:
        note = r.note if r.status == "ok" else f"{r.status}: {r.note}"
        table.add_row(r.variant, str(r.n), f"{r.time_ms:.1f}", f"{r.peak_mb:.1f}", note)
    console.print(table)
    ratio_table = Table(title="ratios")
    ratio_table.add_column("comparison")
    ratio_table.add_column("value", justify="right")
    for key, value in found.items():
        ratio_table.add_row(key, f"{value:.3g}")
    console.print(ratio_table)


def write_outputs(rows: list[Row], found: dict[str, float], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
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
        help="comma-separated attention names and/or sdpa_ref, graph_dense_ref "
        "(default: every registered attention plugin and both references)",
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
    p.add_argument("--window", type=int, default=64, help="window of variants that take one")
    p.add_argument("--degree", type=int, default=8, help="average degree of the random graph")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
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

    undo = _limit_memory(args.mem_limit_gb) if device.type == "cpu" and args.mem_limit_gb else None
    try:
        rows = []
        for v in variants:
            print(f"benchmarking {v} ...", file=sys.stderr, flush=True)
            rows += run_variant(v, args, device)
        extra = additive_probe(args, device) if "additive" in variants else {}
    finally:
        if undo is not None:
            undo()
    found = ratios(rows, args.sizes, extra)
    print_table(rows, found, args)
    write_outputs(rows, found, args.out)
    print(
        f"wrote {args.out / 'attention.csv'}, {args.out / 'attention.png'} and "
        f"{args.out / 'ratios.json'}"
    )
