"""The ``attnbench`` console script: train (the default verb), list, bench.

Startup stays light: ``list`` and ``--help`` import plugins (torch) and Hydra, never
Lightning, torchmetrics or wandb; a run imports the training stack when it starts.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from attnbench import registry

USAGE_VERBS = ("train", "list", "bench")


def _fail(message: str) -> None:
    print(f"attnbench: error: {message}", file=sys.stderr)
    sys.exit(2)


def _check_selected_names(overrides: list[str]) -> None:
    """Catch ``attention=dto`` before Hydra, with close matches instead of Hydra's list."""
    for arg in overrides:
        key, sep, value = arg.partition("=")
        key = key.lstrip("+~")
        if not sep or key not in registry.KINDS or value.startswith(("choice(", "range(", "glob(")):
            continue
        for name in value.split(","):
            name = name.strip()
            if name and name != "null":
                registry.get(key, name)


def _wandb_offline() -> bool:
    """Offline unless the user has a wandb account configured (or asked for a mode)."""
    mode = os.environ.get("WANDB_MODE")
    if mode:
        return mode in ("offline", "dryrun", "disabled")
    if os.environ.get("WANDB_API_KEY"):
        return False
    netrc = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    return not (netrc.is_file() and "api.wandb.ai" in netrc.read_text(errors="ignore"))


def register_resolvers() -> None:
    from omegaconf import OmegaConf

    if not OmegaConf.has_resolver("attnbench.wandb_offline"):
        OmegaConf.register_new_resolver("attnbench.wandb_offline", _wandb_offline)


def train_task(cfg) -> float | None:
    """The Hydra task function: one run; returns ``optimized_metric`` for sweepers."""
    from attnbench.train import run

    try:
        summary = run(cfg)
    except registry.AttnbenchError as e:
        _fail(str(e))
    _print_result(summary)
    return summary["metrics"].get(summary["optimized_metric"])


def _print_result(summary: dict) -> None:
    from hydra.core.hydra_config import HydraConfig

    metrics = "  ".join(f"{k}={v:.4f}" for stage in ("val/", "test/")
                        for k, v in summary["metrics"].items()
                        if k.startswith(stage) and not k.endswith("/loss"))
    speed = summary["train_samples_per_s"]
    speed = f"  {speed:.0f} samples/s" if speed else ""
    out = HydraConfig.get().runtime.output_dir
    print(f"result: {metrics}{speed}  ({summary['wall_seconds']:.1f} s) -> {out}/summary.json")


def _hydra_main(argv: list[str]) -> None:
    import hydra

    from attnbench.config import store_plugins

    store_plugins()
    register_resolvers()

    sys.argv = [sys.argv[0], *argv]
    hydra.main(version_base="1.3", config_path="pkg://attnbench.conf",
               config_name="config")(train_task)()


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    verb = argv[0] if argv and argv[0] in USAGE_VERBS else "train"
    if argv and argv[0] == verb:
        argv = argv[1:]
    try:
        if verb == "list":
            from attnbench.listing import main as list_main

            return list_main(argv)
        if verb == "bench" and argv[:1] in (["startup"], ["throughput"]):
            from attnbench.perf import main as perf_main

            return perf_main(argv)
        if verb == "bench":
            from attnbench.bench import main as bench_main

            return bench_main(argv)
        _check_selected_names([a for a in argv if not a.startswith("-")])
    except registry.AttnbenchError as e:
        _fail(str(e))
    _hydra_main(argv)


if __name__ == "__main__":
    main()
