"""The options of ``attnbench bench attention``."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from attnbench.bench.config import parse_param
from attnbench.bench.timing import DTYPES

DEFAULT_SIZES = (256, 1024, 4096, 8192)

# What --help prints above the options
DESCRIPTION = (
    "Micro-benchmarks: ``attnbench bench attention`` times forward+backward and measures peak\n"
    "memory of every registered attention variant over sequence lengths, next to the\n"
    "references proj_ref, sdpa_ref, dense_ref and graph_dense_ref."
)


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
        description=DESCRIPTION,
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
