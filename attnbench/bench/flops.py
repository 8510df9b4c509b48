"""TFLOP/s of a pass, counting each variant's useful work, not what its kernel happens to
compute: forward = the q/k/v/out projections (8·B·N·d²) + the attention step, 4·h·dh per
visited (query, key) pair (q·k and weights·v, 2 FLOPs per multiply-add); forward+backward =
3 × forward (backward does two matmuls per forward matmul; recomputation is not useful work).
The visited pairs are the config's ``work`` for the variant: dense (B·N², the default), window
(each query's keys within the variant's window, Σ over queries), edges (the edge list plus
self-loops) or projections (proj_ref: no attention step). "% peak" divides by the device's
dense peak for the dtype (DEVICE_PEAKS; n/a on a CPU or an unknown device).
"""

from __future__ import annotations

import argparse
import math

import torch
from torch import Tensor

# How each variant's visited (query, key) pairs are counted for TFLOP/s (see the module doc).
WORK = ("dense", "window", "edges", "projections")


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
