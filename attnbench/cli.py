"""The ``attnbench`` console script: train (the default verb), list, check, bench,
download, report.

Startup stays light: ``list`` and ``--help`` import plugins (torch) and Hydra, never
Lightning, torchmetrics or wandb; a run imports the training stack when it starts.
"""

from __future__ import annotations

import sys

from attnbench import registry

USAGE_VERBS = ("train", "list", "check", "bench", "download", "report")


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


def _in_sweep() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.get().mode == RunMode.MULTIRUN


def train_task(cfg) -> float | None:
    """The Hydra task function: one run; returns ``optimized_metric`` for sweepers.

    A failing job records why in its own directory (see :func:`attnbench.train.record_failure`).
    Alone, it exits at once (2 for bad input, 1 otherwise); in a sweep the other jobs go on
    and the sweep's end lists the failures (:class:`attnbench.sweep.SweepReport`)."""
    from attnbench.train import one_line, record_failure, run

    try:
        summary = run(cfg)
    except registry.AttnbenchError as e:
        record_failure(str(e))
        if not _in_sweep():
            _fail(str(e))
        print(f"attnbench: error: {e}", file=sys.stderr)
        return None
    except Exception as e:  # a bug: alone, Hydra shows the traceback; a sweep goes on
        record_failure(one_line(e))
        if not _in_sweep():
            raise
        print(f"attnbench: job failed: {one_line(e)}", file=sys.stderr)
        return None
    _print_result(summary)
    if summary["status"] != "ok" and not _in_sweep():
        sys.exit(1)
    return summary["metrics"].get(summary["optimized_metric"])


def _print_result(summary: dict) -> None:
    from hydra.core.hydra_config import HydraConfig

    metrics = "  ".join(
        f"{k}={v:.4f}"
        for stage in ("val/", "test/")
        for k, v in summary["metrics"].items()
        if k.startswith(stage) and not k.endswith("/loss")
    )
    speed = summary["train_samples_per_s"]
    speed = f"  {speed:.0f} samples/s" if speed else ""
    out = HydraConfig.get().runtime.output_dir
    print(f"result: {metrics}{speed}  ({summary['wall_seconds']:.1f} s) -> {out}/summary.json")


def _hydra_main(argv: list[str]) -> None:
    import hydra

    from attnbench import sweep
    from attnbench.config import register_resolvers, store_plugins

    store_plugins()
    register_resolvers()

    sys.argv = [sys.argv[0], *argv]
    hydra.main(version_base="1.3", config_path="pkg://attnbench.conf", config_name="config")(
        train_task
    )()
    if sweep.failed_jobs:  # set by SweepReport at the end of a multirun
        sys.exit(1)


HELP_HEADER = """\
attnbench: compare attention mechanisms. Compose a run by naming plugins:
  attnbench task=sentiment model=transformer attention=dot posenc=sinusoidal seed=1
Set a plugin's parameters with <group>.<param>=value (attention.dropout=0.1).
Other verbs: `attnbench list [KIND] [PATTERN]` shows plugins and their parameters;
`attnbench check KIND NAME [param=value ...]` runs a kind's contract on a plugin;
`attnbench bench attention|startup|throughput` runs the benchmarks;
`attnbench report DIR` tabulates the summary.json files of runs (mean ± std over seeds).
"""
HELP_FOOTER = """\
Sweep with -m (attnbench -m posenc=none,sinusoidal,learned); print the composed
config with --cfg job; resume with ckpt_path=<run>/checkpoints/last.ckpt.
Hydra's own options: --hydra-help.
"""


def _help(overrides: list[str]) -> None:
    """Our own --help: Hydra's lists groups by deep-copying its config repository once per
    group (seconds); the registry and conf/ already know the options."""
    from importlib import resources

    from omegaconf import OmegaConf

    from attnbench.config import compose_plain

    groups = {kind: registry.available(kind) for kind in registry.KINDS}
    conf = resources.files("attnbench.conf")
    for folder in conf.iterdir():
        if folder.is_dir() and not folder.name.startswith("_"):
            groups[folder.name] = sorted(
                f.name[:-5] for f in folder.iterdir() if f.name.endswith(".yaml")
            )
    print(HELP_HEADER)
    print("== Config groups (group=option) ==")
    for group in sorted(groups):
        print(f"{group}: {', '.join(groups[group])}")
    print("\n== Config ==\nOverride anything in the config (foo.bar=value)\n")
    print(OmegaConf.to_yaml(compose_plain(overrides)))
    print(HELP_FOOTER)


def _exit(status: int | None) -> None:
    if status:
        sys.exit(status)


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    verb = argv[0] if argv and argv[0] in USAGE_VERBS else "train"
    if argv and argv[0] == verb:
        argv = argv[1:]
    try:
        if verb == "list":
            from attnbench.listing import main as list_main

            return list_main(argv)
        if verb == "check":
            from attnbench.testing import main as check_main

            return _exit(check_main(argv))
        if verb == "download":
            from attnbench.data.download import main as download_main

            return download_main(argv)
        if verb == "report":
            from attnbench.report import main as report_main

            return report_main(argv)
        if verb == "bench" and argv[:1] in (["startup"], ["throughput"]):
            from attnbench.perf import main as perf_main

            return perf_main(argv)
        if verb == "bench":
            from attnbench.bench import main as bench_main

            return bench_main(argv)
        overrides = [a for a in argv if not a.startswith("-")]
        _check_selected_names(overrides)
        if "--help" in argv or "-h" in argv:
            try:
                return _help(overrides)
            except BrokenPipeError:  # `attnbench --help | head`
                sys.stderr.close()
                return None
    except registry.AttnbenchError as e:
        _fail(str(e))
    _hydra_main(argv)


if __name__ == "__main__":
    main()
