"""Micro-benchmarks: ``attnbench bench attention`` times forward+backward and measures peak
memory and TFLOP/s of every registered attention variant over sequence lengths, next to the
references (refs.py), then runs the config's probes and reports the config's ratios.

Each variant runs its sizes in turn (run_variant); one that fails or takes longer than
``--time-limit`` gets a row saying so and its larger sizes are skipped. How a pass is timed
and its memory measured: timing.py; its useful FLOPs: flops.py; building a variant:
variants.py; the config: config.py; rows, comparisons and targets: results.py; the table and
the files written: report.py; the options: cli.py; the CPU process settings
(--mem-limit-gb, --malloc): cpu_process.py.
"""

from __future__ import annotations

import argparse
import gc
import math
import sys

import torch

from attnbench import registry
from attnbench.bench.cli import DEFAULT_SIZES, parser
from attnbench.bench.config import (
    BenchConfig,
    Probe,
    default_config,
    load_config,
    parse_param,
    variant_params,
)
from attnbench.bench.cpu_process import _limit_memory, keep_freed_memory
from attnbench.bench.flops import DEVICE_PEAKS, WORK, device_peak, train_flops, visited_pairs
from attnbench.bench.refs import REFERENCES, DenseRef, GraphDenseRef, ProjRef, SdpaRef, random_edges
from attnbench.bench.report import BESIDE, print_table, write_outputs
from attnbench.bench.results import AT, FIELDS, Comparison, Row, Target, ratios
from attnbench.bench.timing import DTYPES, cpu_peak_bytes, measure, peak_bytes
from attnbench.bench.variants import build_variant, compiled, needs_edges, variant_work

# What attnbench.bench offered as one module; tests patch build_variant, measure and
# random_edges here, which run_variant and run_probe look up in this namespace.
__all__ = [
    "AT",
    "BESIDE",
    "DEFAULT_SIZES",
    "DEVICE_PEAKS",
    "DTYPES",
    "FIELDS",
    "REFERENCES",
    "WORK",
    "BenchConfig",
    "Comparison",
    "DenseRef",
    "GraphDenseRef",
    "Probe",
    "ProjRef",
    "Row",
    "SdpaRef",
    "Target",
    "build_variant",
    "compiled",
    "cpu_peak_bytes",
    "default_config",
    "device_peak",
    "keep_freed_memory",
    "load_config",
    "main",
    "measure",
    "needs_edges",
    "parse_param",
    "parser",
    "peak_bytes",
    "print_table",
    "random_edges",
    "ratios",
    "run_probe",
    "run_probes",
    "run_variant",
    "train_flops",
    "variant_params",
    "variant_work",
    "visited_pairs",
    "write_outputs",
]


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
            row.status, row.note = "failed", registry.one_line(e)
            stop = f"failed at N={n}"
        finally:
            module = edges = None
            gc.collect()
            if device.type == "cuda":
                torch.cuda.empty_cache()
    return rows


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
        print(f"{probe.variant} probe failed: {registry.one_line(e)}", file=sys.stderr)
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
