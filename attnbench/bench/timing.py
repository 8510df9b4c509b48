"""Time and peak memory of one variant's forward+backward at one length.

Time: the median of the timed passes after ``--warmup`` passes: at least ``--repeats`` of
them, and more until they add up to ``--min-time`` seconds (small sizes). Peak memory: on
CUDA, ``torch.cuda.max_memory_allocated`` above what was allocated before the pass; on CPU,
the profiler's allocation events (``profile_memory=True``): each carries the running total of
CPU tensor memory allocated since profiling began, and the peak is the largest total seen
during one pass (tensors that existed before it, such as the inputs and weights, are not
counted).

Precision: ``--dtype bf16|fp16`` runs the pass under ``torch.autocast`` (as the ``bf16-mixed``
training presets do: fp32 weights, low-precision matmuls and attention); ``fp32`` runs it
plainly. ``--compile`` wraps the module in ``torch.compile`` (variants.compiled); it compiles
in the warm-up passes, which --compile makes at least one.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import statistics
import sys
import time
from collections.abc import Callable

import torch
from torch import Tensor, nn

from attnbench import registry
from attnbench.nn.ctx import Ctx


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
        print(f"peak memory not measured: {registry.one_line(e)}", file=sys.stderr)
        return math.nan


DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


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
