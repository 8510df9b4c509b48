"""Vaswani et al. (2017), Table 1, measured: forward+backward time and peak memory of one
attention layer against the sequence length N, with the log-log slope of each curve beside
the order the table gives (N² for full attention, N·r for restricted). A measuring study:
it runs ``attnbench bench attention`` (no training) and reads its attention.csv."""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
import time
from importlib import resources
from pathlib import Path

from attnbench import register
from attnbench.registry import AttnbenchError
from attnbench.study import Results, Study, Verdict

# variant -> exponent of N in time per layer (Vaswani Table 1: n²·d self-attention, r·n·d
# restricted; graph: E·d with E = n·degree; linear attention: n·d²) and in memory when the
# N×N weights are stored as the textbook computes them (0.5 above 1 = "grows with N²").
ORDERS = {
    "dot": 2,
    "dense_ref": 2,  # the textbook softmax(QKᵀ)V with the N×N scores materialised
    "additive": 2,
    "truncated": 1,
    "graph": 1,
    "linear": 1,
}
LABELS = {"dense_ref": "dot (textbook, N×N stored)", "dot": "dot (fused SDPA)"}
FULL = {"sizes": [256, 512, 1024, 2048, 4096, 8192], "fit_from": 1024, "min_time": 0.5}
QUICK = {"sizes": [64, 128, 256], "fit_from": 64, "min_time": 0.02}


def slope(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of log(y) on log(x): the exponent k of y ∝ x^k."""
    points = [(x, y) for x, y in points if x > 0 and y > 0 and math.isfinite(y)]
    if len(points) < 2:
        return math.nan
    lx = [math.log(x) for x, _ in points]
    ly = [math.log(y) for _, y in points]
    mx, my = sum(lx) / len(lx), sum(ly) / len(ly)
    var = sum((a - mx) ** 2 for a in lx)
    return sum((a - mx) * (b - my) for a, b in zip(lx, ly)) / var


@register("study", "complexity")
class Complexity(Study):
    claim = (
        "Self-attention costs O(N²) in the sequence length N while restricted (windowed, "
        "graph) and linear attention cost O(N) (Vaswani et al. 2017, Table 1)."
    )
    rule = (
        "For each variant, fit the log-log slope of forward+backward time and of peak "
        "memory against N over the sizes from fit_from up (N >= 1024 in the full study). "
        "A slope agrees with its theoretical exponent k (2 for dot, the textbook dot and "
        "additive; 1 for truncated, graph and linear) when it lies nearer k than the other "
        "order, i.e. above 1.5 for k=2 and below 1.5 for k=1. Supported when every time and "
        "every memory slope agrees; refuted when at most half of them agree; mixed otherwise; "
        "inconclusive when a variant gave fewer than two sizes."
    )
    metrics = ("time_ms", "peak_mb")
    seeds = 1
    quick_seeds = 1
    percent = False

    def setup(self, quick: bool) -> str:
        s = QUICK if quick else FULL
        return (
            f"`attnbench bench attention` with conf/bench/complexity.yaml: one layer, batch 1, "
            "4 heads, d_model 64, truncated window 32, graph degree 8, the bench's default "
            "dtype (fp32 on a CPU), 1 thread; "
            f"N = {', '.join(map(str, s['sizes']))}; time = median forward+backward pass "
            f"(>= {s['min_time']} s of passes), memory = peak allocated during one pass; "
            f"slopes fitted over N >= {s['fit_from']}. A pass over 20 s ends a variant's "
            "larger sizes."
        )

    def measure(self, out: Path, quick: bool, device: str) -> Results:
        settings = QUICK if quick else FULL
        bench_dir = out / "bench"
        options = {
            "--variants": ",".join(ORDERS),
            "--sizes": ",".join(map(str, settings["sizes"])),
            "--config": resources.files("attnbench.conf") / "bench" / "complexity.yaml",
            "--batch": 1,
            "--heads": 4,
            "--d-model": 64,
            "--degree": 8,
            "--threads": 1,  # steadier timings on a shared CPU
            "--device": device,
            "--min-time": settings["min_time"],
            "--time-limit": 20,  # a slower pass ends that variant's larger sizes ("skipped")
            "--out": bench_dir,
        }
        args = ["bench", "attention", *(str(x) for item in options.items() for x in item)]
        stamp = bench_dir / "args.json"  # the arguments of the finished benchmark there
        done = stamp.is_file() and json.loads(stamp.read_text()).get("args") == args
        if not (done and (bench_dir / "attention.csv").is_file()):  # resumable: reuse a run
            print(f"attnbench study: attnbench {' '.join(args)}", file=sys.stderr, flush=True)
            start = time.perf_counter()
            bench = subprocess.run([sys.executable, "-m", "attnbench", *args], check=False)
            if bench.returncode:
                raise AttnbenchError(
                    f"the attention benchmark stopped (exit {bench.returncode}, its error is "
                    "above); the study wrote no report: fix that and run it again"
                )
            seconds = time.perf_counter() - start
            stamp.write_text(json.dumps({"args": args, "seconds": seconds}))
        results = self.read(bench_dir / "attention.csv", settings["fit_from"])
        results.seconds = json.loads(stamp.read_text())["seconds"]
        return results

    @staticmethod
    def read(path: Path, fit_from: int) -> Results:
        rows, failed = [], []
        with open(path, newline="") as f:
            measured = list(csv.DictReader(f))
        for r in measured:
            if r["status"] != "ok":
                failed.append(
                    {
                        "status": r["status"],
                        "run": f"{r['variant']} N={r['n']}",
                        "reason": r["note"],
                    }
                )
                continue
            for metric in ("time_ms", "peak_mb"):
                rows.append(
                    {
                        "sweep": "bench",
                        "variant": r["variant"],
                        "N": int(r["n"]),
                        "metric": metric,
                        "mean": float(r[metric]),
                        "std": None,
                        "n": 1,
                    }
                )
        for variant in ORDERS:
            for metric in ("time_ms", "peak_mb"):
                points = [
                    (row["N"], row["mean"])
                    for row in rows
                    if row["variant"] == variant
                    and row["metric"] == metric
                    and row.get("N", 0) >= fit_from
                ]
                rows.append(
                    {
                        "sweep": "slope",
                        "variant": variant,
                        "N": f">={fit_from}",
                        "metric": metric,
                        "mean": slope(points),
                        "std": None,
                        "n": len(points),
                    }
                )
        return Results(rows, failed)

    def verdict(self, results: Results) -> Verdict:
        numbers, agree, total, missing = {}, 0, 0, []
        for variant, k in ORDERS.items():
            numbers[f"{variant} theoretical exponent"] = k
            for metric in ("time_ms", "peak_mb"):
                s = results.stat(metric, sweep="slope", variant=variant)
                numbers[f"{variant} {metric} slope"] = s.mean
                total += 1
                if s.missing or s.n < 2:
                    missing.append(f"{variant} {metric}")
                    continue
                ok = s.mean > 1.5 if k == 2 else s.mean < 1.5
                agree += ok
        numbers["slopes agreeing"] = f"{agree} of {total}"
        off = [
            f"{v} {m} ({numbers[f'{v} {m} slope']:.2f}, theory {ORDERS[v]})"
            for v in ORDERS
            for m in ("time_ms", "peak_mb")
            if not math.isnan(numbers[f"{v} {m} slope"])
            and (numbers[f"{v} {m} slope"] > 1.5) != (ORDERS[v] == 2)
        ]
        if missing:
            return Verdict("inconclusive", numbers, f"no slope for {', '.join(missing)}")
        why = "disagreeing: " + "; ".join(off) if off else "every slope agrees with its order"
        if agree == total:
            return Verdict("supported", numbers, why)
        return Verdict("refuted" if agree <= total / 2 else "mixed", numbers, why)

    def figure(self, results: Results):
        import matplotlib

        from attnbench.analysis.plot import STYLE, new_figure

        with matplotlib.rc_context(STYLE):
            fig, axes = new_figure(11.0, 4.2, 2)
            for ax, metric, label in zip(
                axes, ("time_ms", "peak_mb"), ("forward+backward time (ms)", "peak memory (MiB)")
            ):
                for i, variant in enumerate(ORDERS):
                    pts = sorted(
                        (r["N"], r["mean"])
                        for r in results.rows
                        if r["sweep"] == "bench"
                        and r["variant"] == variant
                        and r["metric"] == metric
                    )
                    if not pts:
                        continue
                    k = results.stat(metric, sweep="slope", variant=variant).mean
                    name = LABELS.get(variant, variant)
                    ax.plot(
                        *zip(*pts),
                        marker="o",
                        color=f"C{i}",
                        linestyle="--" if variant == "dense_ref" else "-",
                        label=f"{name}: slope {k:.2f} (theory {ORDERS[variant]})",
                    )
                ax.set_xscale("log", base=2)
                ax.set_yscale("log")
                ax.set_xlabel("sequence length N")
                ax.set_ylabel(label)
                ax.legend(fontsize=7)
            fig.suptitle("one attention layer vs N (log-log): fitted slope vs Table 1's order")
            fig.subplots_adjust(left=0.07, right=0.98, bottom=0.13, top=0.9, wspace=0.25)
        return fig
