"""Framework benchmarks (``attnbench bench startup|throughput``), run on demand.

startup:    wall time of ``attnbench list`` and ``attnbench --help`` (target <= 3 s each).
throughput: training samples/s through attnbench vs a hand-written PyTorch loop over the
            same model and batches, measured in one process (target ratio >= 0.9); the
            model is the default config's (conf/config.yaml) unless overrides choose one.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


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


def _hand_written_loop(model, task, optim: dict, epochs: int, clip: float) -> list[float]:
    """The loop a researcher would write by hand: same model, batches, optimiser, schedule.
    Returns samples/s of each epoch."""
    import torch

    from attnbench.lit import make_optimizer

    opt, sched = make_optimizer(model.parameters(), optim, epochs * len(task.dataloader("train")))
    model.train()
    rates = []
    for epoch in range(epochs):
        loader = task.dataloader("train")
        loader.batch_sampler.sampler.set_epoch(epoch)
        samples, t0 = 0, time.perf_counter()
        for batch in loader:
            loss = task.loss(task.forward(model.net, batch, "train"), batch)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
            opt.step()
            if sched is not None:
                sched.step()
            samples += task.num_samples(batch)
        rates.append(samples / (time.perf_counter() - t0))
    return rates


def throughput(overrides: list[str], epochs: int, threads: int | None) -> dict[str, float]:
    import pytorch_lightning as pl
    import torch
    from omegaconf import OmegaConf

    from attnbench import registry
    from attnbench.builders import build_backbone, selected
    from attnbench.config import compose
    from attnbench.lit import LitModel
    from attnbench.train import run

    if threads:
        torch.set_num_threads(threads)
    out = Path(tempfile.mkdtemp(prefix="attnbench-throughput-"))
    cfg = compose([*overrides, f"trainer.max_epochs={epochs}", "trainer.accelerator=cpu"], out)

    def hand_written() -> list[float]:
        pl.seed_everything(cfg.seed, verbose=False)  # same initial weights and batches
        plugins = selected(cfg)
        name, params = plugins["task"]
        task = registry.build("task", name, data_dir=str(cfg.data_dir), **params)
        task.setup()
        model = LitModel(task, build_backbone(plugins, task), OmegaConf.to_container(cfg.optim))
        return _hand_written_loop(
            model, task, OmegaConf.to_container(cfg.optim), epochs, cfg.trainer.gradient_clip_val
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
    }


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="attnbench bench startup|throughput")
    parser.add_argument("what", choices=["startup", "throughput"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: torch's own choice)"
    )
    parser.add_argument(
        "overrides",
        nargs="*",
        help="config overrides for throughput (default: none, the composed default config)",
    )
    args = parser.parse_args(argv)
    if args.what == "startup":
        for label, seconds in startup(args.repeats).items():
            print(f"{label:<22} {seconds:6.2f} s  (median of {args.repeats}; target <= 3 s)")
        return
    if args.epochs < 2:
        parser.error("--epochs must be >= 2 (the first epoch is warm-up)")
    result = throughput(args.overrides, args.epochs, args.threads)
    print(f"hand-written loop : {result['hand_written_samples_per_s']:9.1f} samples/s")
    print(f"attnbench         : {result['attnbench_samples_per_s']:9.1f} samples/s")
    print(
        f"ratio             : {result['ratio']:9.3f}  (target >= 0.9; "
        f"{result['threads']} torch threads)"
    )
