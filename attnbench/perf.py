"""Framework benchmarks (``attnbench bench startup|throughput|maps|report``), run on demand.

startup:    wall time of ``attnbench list`` and ``attnbench --help`` (target <= 3 s each).
throughput: training samples/s through attnbench vs a hand-written PyTorch loop over the
            same model and batches, measured in one process (target ratio >= 0.9); the
            model is the default config's (conf/config.yaml) unless overrides choose one.
            ``--device cuda`` runs both on the GPU (the trainer=gpu preset unless the
            overrides choose a trainer; the hand-written loop pins host memory, copies
            with non_blocking=True, runs under the same autocast and synchronises the
            device before reading the clock).
maps:       wall time of ``attnbench maps RUN_DIR --index 0,1,2`` (model load + forward +
            rendering, as a user runs it) on a small run the benchmark trains first with
            fast settings (target <= 10 s).
report:     wall time of ``attnbench report DIRS --html FILE`` over 50 run directories
            made from that run (its summary.json, CSV log, .hydra/ and maps, with the
            metrics, seed and attention varied so that the report has groups to pool)
            (target <= 10 s).
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

TARGET_SECONDS = 10.0  # maps (3 examples) and report --html (50 runs), issue #13


def startup(repeats: int) -> dict[str, float]:
    results = {}
    for verb in (["list"], ["--help"]):
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            subprocess.run(
                [sys.executable, "-m", "attnbench", *verb], check=True, capture_output=True
            )
            times.append(time.perf_counter() - t0)
        results["attnbench " + " ".join(verb)] = statistics.median(times)
    return results


def autocast_dtype(precision: object):
    """The autocast dtype of a Lightning precision setting (None: full precision)."""
    import torch

    from attnbench.registry import ConfigError

    text = str(precision)
    if text in ("32", "32-true"):
        return None
    if text in ("bf16-mixed", "16-mixed"):
        return torch.bfloat16 if text.startswith("bf16") else torch.float16
    raise ConfigError(
        f"bench throughput: trainer.precision={text} has no hand-written counterpart here; "
        "use 32, bf16-mixed or 16-mixed"
    )


def _pinned(loader):
    """The same loader (dataset, batches, collate, workers) with pinned host memory."""
    from torch.utils.data import DataLoader

    if loader.pin_memory:
        return loader
    return DataLoader(
        loader.dataset,
        batch_sampler=loader.batch_sampler,
        collate_fn=loader.collate_fn,
        num_workers=loader.num_workers,
        persistent_workers=loader.persistent_workers,
        pin_memory=True,
    )


def _hand_written_loop(
    model, task, optim: dict, epochs: int, clip: float, device=None, precision: object = "32"
) -> list[float]:
    """The loop a researcher would write by hand: same model, batches, optimiser, schedule.
    On CUDA: pinned host memory, non-blocking copies, autocast as the trainer's precision
    and a synchronisation before each clock reading. Returns samples/s of each epoch."""
    import torch
    from lightning_fabric.utilities.apply_func import move_data_to_device

    from attnbench.lit import make_optimizer

    device = torch.device(device or "cpu")
    cuda = device.type == "cuda"
    amp = autocast_dtype(precision)
    model.to(device)
    opt, sched = make_optimizer(model.parameters(), optim, epochs * len(task.dataloader("train")))
    scaler = torch.amp.GradScaler(device.type, enabled=amp == torch.float16)
    model.train()
    rates = []
    loader = task.dataloader("train")  # built once, as a script keeps its DataLoader
    loader = _pinned(loader) if cuda else loader
    for epoch in range(epochs):
        loader.batch_sampler.sampler.set_epoch(epoch)
        if cuda:
            torch.cuda.synchronize(device)
        samples, t0 = 0, time.perf_counter()
        for batch in loader:
            batch = move_data_to_device(batch, device)  # non_blocking=True on CUDA
            with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
                loss = task.loss(task.forward(model.net, batch, "train"), batch)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
            scaler.step(opt)
            scaler.update()
            if sched is not None:
                sched.step()
            samples += task.num_samples(batch)
        if cuda:
            torch.cuda.synchronize(device)
        rates.append(samples / (time.perf_counter() - t0))
    return rates


def device_overrides(device: str, overrides: list[str]) -> list[str]:
    """The trainer overrides for --device: the GPU preset (bf16-mixed) on cuda unless the
    overrides choose a trainer themselves; the accelerator always."""
    if device == "cpu":
        return ["trainer.accelerator=cpu"]
    chosen = any(o.split("=", 1)[0].lstrip("+~") == "trainer" for o in overrides)
    return [*([] if chosen else ["trainer=gpu"]), "trainer.accelerator=gpu", "trainer.devices=1"]


def throughput(
    overrides: list[str], epochs: int, threads: int | None, device: str = "cpu"
) -> dict[str, float]:
    import pytorch_lightning as pl
    import torch
    from omegaconf import OmegaConf

    from attnbench import registry
    from attnbench.builders import build_backbone, selected
    from attnbench.config import compose
    from attnbench.lit import LitModel
    from attnbench.train import run

    if device == "cuda" and not torch.cuda.is_available():
        raise registry.ConfigError(
            "bench throughput --device cuda but no CUDA device is available; use --device cpu"
        )
    if threads:
        torch.set_num_threads(threads)
    out = Path(tempfile.mkdtemp(prefix="attnbench-throughput-"))
    trainer = device_overrides(device, overrides)
    cfg = compose([*trainer, *overrides, f"trainer.max_epochs={epochs}"], out)

    def hand_written() -> list[float]:
        pl.seed_everything(cfg.seed, verbose=False)  # same initial weights and batches
        plugins = selected(cfg)
        name, params = plugins["task"]
        task = registry.build("task", name, data_dir=str(cfg.data_dir), **params)
        task.setup()
        model = LitModel(task, build_backbone(plugins, task), OmegaConf.to_container(cfg.optim))
        return _hand_written_loop(
            model,
            task,
            OmegaConf.to_container(cfg.optim),
            epochs,
            cfg.trainer.gradient_clip_val,
            device,
            cfg.trainer.get("precision", "32"),
        )

    # The machine is shared and noisy: per-epoch rates, the first (warm-up) epoch left out,
    # the hand-written loop timed before and after attnbench; medians compared.
    hand = hand_written()[1:]
    summary = run(cfg)
    per_epoch = summary["train_samples_per_s"] * summary["train_seconds"] / epochs
    ours = [per_epoch / s for s in summary["epoch_seconds"][1:]]
    hand += hand_written()[1:]
    hand_rate, our_rate = statistics.median(hand), statistics.median(ours)
    return {
        "hand_written_samples_per_s": hand_rate,
        "attnbench_samples_per_s": our_rate,
        "ratio": our_rate / hand_rate,
        "threads": torch.get_num_threads(),
        "device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
        "precision": str(cfg.trainer.get("precision", "32")),
    }


# ----------------------------------------------------------------------------- maps, report


@dataclass(frozen=True)
class Timing:
    wall: float  # seconds on the clock: what the target is about
    cpu: float  # the command's user + system CPU seconds: tells a loaded machine apart


def _attnbench(*args: str) -> Timing:
    """How long one ``attnbench`` command takes, as a user runs it (a fresh process)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "attnbench", *args], capture_output=True, text=True
    )
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["(no output)"]
        raise RuntimeError(f"attnbench {' '.join(args)} failed: {tail[0]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return Timing(wall, cpu)


def _median(timings: list[Timing]) -> Timing:
    return Timing(
        statistics.median(t.wall for t in timings), statistics.median(t.cpu for t in timings)
    )


# Fast settings for the run the maps and report benchmarks read: the default config's model
# and task (a 2-layer, 4-head transformer on synthetic sentiment), a few batches.
SMALL_RUN = (
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=4",
    "trainer.limit_val_batches=2",
    "trainer.limit_test_batches=2",
    "trainer.accelerator=cpu",
)


def small_run(base: Path, overrides: list[str]) -> Path:
    """Train the small finished run (summary.json, CSV log, checkpoint, .hydra/)."""
    run_dir = base / "run"
    _attnbench(*SMALL_RUN, *overrides, f"hydra.run.dir={run_dir}")
    return run_dir


def bench_maps(run_dir: Path, repeats: int) -> Timing:
    """Median time of ``attnbench maps RUN_DIR --index 0,1,2`` (maps to RUN_DIR/maps,
    where the report finds them)."""
    return _median([_attnbench("maps", str(run_dir), "--index", "0,1,2") for _ in range(repeats)])


def _scaled_csv(src: Path, dst: Path, factor: float) -> None:
    """Copy a CSV log with its accuracy-like columns (values in [0, 1]) scaled by factor."""
    with open(src, newline="") as f:
        rows = list(csv.DictReader(f))
    names = list(rows[0]) if rows else []
    for row in rows:
        for name in names:
            if name not in ("epoch", "step") and row[name] and "loss" not in name:
                row[name] = f"{min(1.0, float(row[name]) * factor):.6f}"
    with open(dst, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=names)
        writer.writeheader()
        writer.writerows(rows)


def synthetic_runs(run_dir: Path, base: Path, count: int, variants: list[str]) -> list[Path]:
    """``count`` copies of a finished run (no checkpoint: reports never read it), each with
    another seed, attention name and metrics (scaled by a random factor near 1), so that the
    report groups and pools them as it would a sweep's runs."""
    rng = random.Random(0)
    summary = json.loads((run_dir / "summary.json").read_text())
    runs = []
    for i in range(count):
        dst = base / f"run_{i:02d}"
        shutil.copytree(run_dir, dst, ignore=shutil.ignore_patterns("checkpoints"))
        factor = rng.uniform(0.9, 1.1)
        copy = json.loads(json.dumps(summary))
        seed, name = i // len(variants), variants[i % len(variants)]
        copy["seed"] = copy["config"]["seed"] = seed
        copy["config"]["attention"]["_name_"] = copy["plugins"]["attention"]["name"] = name
        copy["overrides"] = [*copy.get("overrides", []), f"attention={name}", f"seed={seed}"]
        copy["metrics"] = {
            k: (min(1.0, v * factor) if isinstance(v, (int, float)) and "loss" not in k else v)
            for k, v in (summary.get("metrics") or {}).items()
        }
        (dst / "summary.json").write_text(json.dumps(copy, indent=2))
        for log in run_dir.rglob("metrics.csv"):
            _scaled_csv(log, dst / log.relative_to(run_dir), factor)
        runs.append(dst)
    return runs


GROUP = "task.name,attention.name"  # the synthetic runs' groups: one per attention name


def bench_report(runs: list[Path], out: Path, repeats: int) -> Timing:
    """Median seconds of ``attnbench report RUNS --group GROUP --html FILE``."""
    html = out / "report.html"
    timing = _median(
        [
            _attnbench("report", *map(str, runs), "--group", GROUP, "--html", str(html))
            for _ in range(repeats)
        ]
    )
    if not html.is_file() or html.stat().st_size == 0:
        raise RuntimeError(f"attnbench report --html wrote no page at {html}")
    return timing


def _line(label: str, timing: Timing, repeats: int) -> str:
    verdict = "PASS" if timing.wall <= TARGET_SECONDS else "FAIL"
    return (
        f"{label:<36} {timing.wall:6.2f} s  ({timing.cpu:.2f} s CPU; median of {repeats}; "
        f"target <= {TARGET_SECONDS:g} s)  {verdict}"
    )


def maps_and_report(what: str, repeats: int, runs: int, overrides: list[str]) -> None:
    from attnbench import registry

    base = Path(tempfile.mkdtemp(prefix=f"attnbench-{what}-"))
    try:
        t0 = time.perf_counter()
        run_dir = small_run(base, overrides)
        print(f"trained the small run in {time.perf_counter() - t0:.1f} s: {run_dir}")
        print(_line("attnbench maps RUN --index 0,1,2", bench_maps(run_dir, repeats), repeats))
        if what == "maps":
            return
        variants = sorted(registry.available("attention"))[:5]
        copies = synthetic_runs(run_dir, base / "runs", runs, variants)
        timing = bench_report(copies, base, repeats)
        print(_line(f"attnbench report --html ({runs} runs)", timing, repeats))
    finally:
        shutil.rmtree(base, ignore_errors=True)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="attnbench bench startup|throughput|maps|report",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("what", choices=["startup", "throughput", "maps", "report"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument(
        "--device",
        choices=["cpu", "cuda"],
        default="cpu",
        help="throughput: where both loops train (cuda: the trainer=gpu preset unless the "
        "overrides choose a trainer)",
    )
    parser.add_argument(
        "--runs", type=int, default=50, help="report: run directories to report on (default 50)"
    )
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: torch's own choice)"
    )
    parser.add_argument(
        "overrides",
        nargs="*",
        help="config overrides for throughput, or for the small run maps/report train "
        "(default: none, the composed default config)",
    )
    return parser


def main(argv: list[str]) -> None:
    parser = build_parser()
    args = parser.parse_intermixed_args(argv)  # overrides may follow the options
    if args.repeats < 1 or args.runs < 1:
        parser.error("--repeats and --runs must be >= 1")
    if args.what in ("maps", "report"):
        maps_and_report(args.what, args.repeats, args.runs, args.overrides)
        return
    if args.what == "startup":
        for label, seconds in startup(args.repeats).items():
            print(f"{label:<22} {seconds:6.2f} s  (median of {args.repeats}; target <= 3 s)")
        return
    if args.epochs < 2:
        parser.error("--epochs must be >= 2 (the first epoch is warm-up)")
    result = throughput(args.overrides, args.epochs, args.threads, args.device)
    print(f"hand-written loop : {result['hand_written_samples_per_s']:9.1f} samples/s")
    print(f"attnbench         : {result['attnbench_samples_per_s']:9.1f} samples/s")
    print(
        f"ratio             : {result['ratio']:9.3f}  (target >= 0.9; "
        f"{result['threads']} torch threads, {result['device']}, "
        f"precision {result['precision']})"
    )
