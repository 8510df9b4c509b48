"""Recurrence is sequential, self-attention is parallel: an LSTM runs N steps one after the
other, a transformer layer a constant number of steps whatever N, so on parallel hardware
the LSTM's training step grows with N and the transformer's hardly does.

A measuring study (no training): it times one training step (forward + backward, batch 8,
random inputs) of the two backbones themselves at each sequence length N, with the bench's
timing loop (attnbench.bench.measure: the median of >= 3 passes after a warm-up, and peak
memory). Why not training sweeps on a task with a length parameter: an epoch's time there
also holds data loading, the embedder, the head and validation, and its number of steps
changes with N, which blurs the one thing the claim is about, the backbone's step; the
per-epoch curve is derived here instead, for a fixed corpus of EPOCH_TOKENS tokens cut into
sequences of N (T / (B·N) steps of the measured time).

Both backbones: d_model 128, 2 layers, dropout 0 (the registry's defaults otherwise: a
bidirectional LSTM, as the other studies' encoders; a pre-norm transformer with 4 heads,
dot attention through SDPA, sinusoidal positions). On a CPU the pass runs in fp32 with
torch's threads (OMP_NUM_THREADS); on CUDA under bf16 autocast, as trainer=gpu trains. On
one CPU thread nothing runs in parallel, so there the curves count work, not sequential
steps: the device and thread count are in every row, and the verdict holds for them.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

from attnbench import register
from attnbench.study import Results, Study, Verdict, checked

MODELS = ("rnn", "transformer")  # rnn: the LSTM (model.cell=lstm, its default)
LABELS = {"rnn": "BiLSTM (N sequential steps)", "transformer": "transformer (dot, SDPA)"}
EPOCH_TOKENS = 2**16  # the fixed corpus of the per-epoch curve
SETTINGS = {
    "cpu": {
        "sizes": [64, 128, 256, 512, 1024, 2048],
        "fit_from": 256,
        "d_model": 128,
        "batch": 8,
        "min_time": 1.0,
    },
    "cuda": {
        "sizes": [256, 512, 1024, 2048, 4096, 8192, 16384],
        "fit_from": 1024,
        "d_model": 128,
        "batch": 8,
        "min_time": 0.5,
    },
    "quick": {"sizes": [16, 32, 64], "fit_from": 16, "d_model": 32, "batch": 2, "min_time": 0.02},
}
LAYERS, HEADS = 2, 4
TIME_LIMIT = 30.0  # seconds: a slower pass ends that backbone's larger sizes


def settings_for(quick: bool, device: str) -> dict[str, Any]:
    return dict(SETTINGS["quick" if quick else ("cuda" if device == "cuda" else "cpu")])


def loglog_slope(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of log(time) on log(N) (numpy's polyfit): the exponent k of
    time ∝ N^k; NaN with fewer than two usable points."""
    import numpy as np

    points = [(x, y) for x, y in points if x > 0 and y > 0 and math.isfinite(y)]
    if len(points) < 2:
        return math.nan
    x, y = np.log([p[0] for p in points]), np.log([p[1] for p in points])
    return float(np.polyfit(x, y, 1)[0])


def build(model: str, d_model: int, max_len: int):
    """The backbone as the harness builds it (registry factories for its attention and
    positional encoding), on a plain sequence task."""
    from types import SimpleNamespace

    from torch import nn

    from attnbench import registry

    task = SimpleNamespace(seq2seq=False)  # an encoder on a sequence: no decoder
    attention = registry.factory("attention", "dot")
    if model == "transformer":
        posenc = registry.factory("posenc", "sinusoidal", max_len=max_len)
        backbone = registry.build(
            "model",
            model,
            attention=attention,
            posenc=posenc,
            task=task,
            d_model=d_model,
            heads=HEADS,
            layers=LAYERS,
            dropout=0.0,
        )
    else:
        backbone = registry.build(
            "model",
            model,
            attention=attention,
            task=task,
            d_model=d_model,
            layers=LAYERS,
            dropout=0.0,
        )

    class Step(nn.Module):
        """bench.measure times ``module(x, x, x, ctx=ctx)``: the backbone behind that call."""

        def __init__(self):
            super().__init__()
            self.backbone = backbone

        def forward(self, query, key, value, *, ctx, need_weights=False):
            return self.backbone(query, ctx), None  # (B, N, d) -> (B, N, d)

    return Step()


def measure_all(s: dict[str, Any], device_name: str) -> list[dict[str, Any]]:
    """One row per backbone and N: time_ms, peak_mb, status and note."""
    import argparse

    import torch

    from attnbench import bench

    device = torch.device(device_name)
    if device.type == "cpu":
        bench.keep_freed_memory()  # as the bench does: steadier times for large buffers
    args = argparse.Namespace(
        batch=s["batch"],
        d_model=s["d_model"],
        dtype="bf16" if device.type == "cuda" else "fp32",
        warmup=1,
        repeats=3,
        min_time=s["min_time"],
        time_limit=TIME_LIMIT,
        compile=False,
    )
    where = f"cpu, {torch.get_num_threads()} thread(s)" if device.type == "cpu" else device_name
    found = []
    for model in MODELS:
        stop = ""
        for n in s["sizes"]:
            row = {"model": model, "N": n, "device": where}
            found.append(row)
            if stop:
                row.update(status="skipped", note=stop)
                continue
            try:
                torch.manual_seed(0)
                step = build(model, s["d_model"], max(s["sizes"])).to(device).train()
                ms, mb, note = bench.measure(step, n, args, None, device)
                row.update(status="ok", time_ms=ms, peak_mb=mb, note=note)
                if note:
                    stop = f"N={n} took over {TIME_LIMIT:g} s a pass"
            except Exception as e:  # a failing size gets a row saying why; the rest go on
                row.update(status="failed", note=f"{type(e).__name__}: {str(e)[:160]}")
                stop = f"failed at N={n}"
    return found


@register("study", "parallelism")
class Parallelism(Study):
    claim = (
        "An RNN needs O(N) sequential steps for a sequence of length N, self-attention O(1), "
        "so on parallel hardware a transformer's training step grows far more slowly with N "
        "than an LSTM's."
    )
    rule = (
        "Time one training step (forward + backward) of each backbone at every N and fit the "
        "log-log slope of time against N over N >= fit_from (256 on a CPU, 1024 on a GPU). "
        "(a) Recurrence is sequential: the LSTM's slope is at least 0.8. (b) Attention is "
        "parallel: the transformer's slope is below the LSTM's by at least 0.2. (c) At the "
        "largest N both backbones reached, the LSTM's step takes longer than the "
        "transformer's. Supported when (a), (b) and (c) hold; refuted when (b) and (c) both "
        "fail; mixed otherwise; inconclusive when a backbone has fewer than two sizes in the "
        "fit. The verdict is for the device and thread count in the table."
    )
    metrics = ("time_ms", "epoch_s", "peak_mb")
    seeds = 1
    quick_seeds = 1
    percent = False

    def setup(self, quick: bool) -> str:
        lines = []
        for device in ("cpu", "cuda"):
            s = settings_for(quick, device)
            lines.append(
                f"{'quick' if quick else device}: N = {', '.join(map(str, s['sizes']))}, "
                f"batch {s['batch']}, d_model {s['d_model']}, slopes over N >= {s['fit_from']}"
            )
            if quick:
                break
        return (
            f"Measured, not trained: forward + backward of each backbone ({LAYERS} layers; "
            f"transformer {HEADS} heads, dot attention) on random inputs, median of >= 3 "
            "passes (attnbench.bench.measure); fp32 on a CPU, bf16 autocast on CUDA. "
            f"epoch_s = time_ms × {EPOCH_TOKENS} / (batch · N): one epoch over a fixed corpus "
            f"of {EPOCH_TOKENS} tokens. " + "; ".join(lines) + "."
        )

    def measure(self, out: Path, quick: bool, device: str) -> Results:
        s = settings_for(quick, device)
        cache = out / "bench" / "parallelism.json"  # resumable: reused when settings match
        key = {"settings": s, "device": device}
        saved = json.loads(cache.read_text()) if cache.is_file() else {}
        if saved.get("key") != key:
            start = time.perf_counter()
            measured = measure_all(s, device)
            saved = {"key": key, "rows": measured, "seconds": time.perf_counter() - start}
            cache.parent.mkdir(parents=True, exist_ok=True)
            cache.write_text(json.dumps(saved, indent=2) + "\n")
        results = self.read(saved["rows"], s)
        results.seconds = saved["seconds"]
        return results

    @staticmethod
    def read(measured: list[dict[str, Any]], s: dict[str, Any]) -> Results:
        rows, failed = [], []
        for r in measured:
            if r["status"] != "ok":
                failed.append(
                    {"status": r["status"], "run": f"{r['model']} N={r['N']}", "reason": r["note"]}
                )
                continue
            fields = {"model": r["model"], "N": r["N"], "device": r["device"]}
            epoch_s = r["time_ms"] / 1e3 * EPOCH_TOKENS / (s["batch"] * r["N"])
            for metric, value in (
                ("time_ms", r["time_ms"]),
                ("epoch_s", epoch_s),
                ("peak_mb", r["peak_mb"]),
            ):
                rows.append(
                    {
                        "sweep": "step",
                        **fields,
                        "metric": metric,
                        "mean": value,
                        "std": None,
                        "n": 1,
                    }
                )
        for model in MODELS:
            points = [
                (row["N"], row["mean"])
                for row in rows
                if row["model"] == model
                and row["metric"] == "time_ms"
                and row["N"] >= s["fit_from"]
            ]
            rows.append(
                {
                    "sweep": "slope",
                    "model": model,
                    "N": f">={s['fit_from']}",
                    "metric": "time_ms",
                    "mean": loglog_slope(points),
                    "std": None,
                    "n": len(points),
                }
            )
        return Results(rows, failed)

    def verdict(self, results: Results) -> Verdict:
        rnn = results.stat("time_ms", sweep="slope", model="rnn")
        tf = results.stat("time_ms", sweep="slope", model="transformer")
        numbers: dict[str, Any] = {"LSTM slope": rnn.mean, "transformer slope": tf.mean}
        gone = [m for m, s in (("rnn", rnn), ("transformer", tf)) if s.missing or s.n < 2]
        if gone:
            return Verdict(
                "inconclusive", numbers, f"fewer than two sizes fitted: {', '.join(gone)}"
            )
        both = set(results.values("N", "time_ms", sweep="step"))
        reached = [
            n
            for n in both
            if isinstance(n, int)
            and not results.stat("time_ms", sweep="step", model="rnn", N=n).missing
            and not results.stat("time_ms", sweep="step", model="transformer", N=n).missing
        ]
        if not reached:
            return Verdict("inconclusive", numbers, "no N where both backbones were measured")
        largest = max(reached)
        ratio = (
            results.stat("time_ms", sweep="step", model="rnn", N=largest).mean
            / results.stat("time_ms", sweep="step", model="transformer", N=largest).mean
        )
        checks = {
            "(a) LSTM slope >= 0.8": rnn.mean >= 0.8,
            "(b) transformer slope <= LSTM slope - 0.2": tf.mean <= rnn.mean - 0.2,
            f"(c) LSTM slower at N={largest}": ratio > 1,
        }
        numbers |= {"largest N": largest, "LSTM / transformer time at largest N": ratio}
        _, parallel, faster = checks.values()
        return checked(checks, numbers, refuted=not parallel and not faster)

    def figure(self, results: Results):
        import matplotlib

        from attnbench.analysis.plot import STYLE, new_figure

        panels = (
            ("time_ms", "one training step, forward + backward (ms)"),
            ("epoch_s", f"one epoch of {EPOCH_TOKENS} tokens (s)"),
        )
        with matplotlib.rc_context(STYLE):
            fig, axes = new_figure(11.0, 4.2, 2)
            for ax, (metric, label) in zip(axes, panels):
                for i, model in enumerate(MODELS):
                    pts = sorted(
                        (r["N"], r["mean"])
                        for r in results.rows
                        if r["sweep"] == "step" and r["model"] == model and r["metric"] == metric
                    )
                    if not pts:
                        continue
                    k = results.stat("time_ms", sweep="slope", model=model).mean
                    text = f", step slope {k:.2f}" if metric == "time_ms" else ""
                    ax.plot(*zip(*pts), marker="o", color=f"C{i}", label=LABELS[model] + text)
                ax.set_xscale("log", base=2)
                ax.set_yscale("log")
                ax.set_xlabel("sequence length N")
                ax.set_ylabel(label)
                ax.legend(fontsize=7)
            devices = sorted({str(r.get("device")) for r in results.rows if r["sweep"] == "step"})
            fig.suptitle(f"LSTM vs transformer training time vs N (log-log, {', '.join(devices)})")
            fig.subplots_adjust(left=0.07, right=0.98, bottom=0.13, top=0.9, wspace=0.25)
        return fig
