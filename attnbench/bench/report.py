"""The results as rich tables on stdout (the rows, then the ratios with their targets) and
as files: attention.csv (the rows), attention.png (time and peak memory against N),
ratios.json and targets.json (each ratio with a target in the config: its value, target and
verdict)."""

from __future__ import annotations

import argparse
import csv
import json
import math
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from attnbench.bench.refs import REFERENCES
from attnbench.bench.results import Row, Target, _get, _ratio


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
