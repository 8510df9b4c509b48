"""The ``attnbench`` console script: train (the default verb), list, check, bench, study,
download, report.

Startup stays light: ``list`` and ``--help`` import plugins (torch) and Hydra, never
Lightning, torchmetrics or wandb; a run imports the training stack when it starts.
"""

from __future__ import annotations

import os
import sys

from attnbench import registry


def _fail(message: str) -> None:
    print(f"attnbench: error: {message}", file=sys.stderr)
    sys.exit(2)


def _preset_groups() -> dict[str, list[str]]:
    """The YAML config groups of conf/ (trainer, logger, experiment) and their options."""
    from importlib import resources

    conf = resources.files("attnbench.conf")
    return {
        folder.name: sorted(f.name[:-5] for f in folder.iterdir() if f.name.endswith(".yaml"))
        for folder in conf.iterdir()
        # hydra/ holds launcher and sweeper presets, chosen as hydra/launcher=...
        if folder.is_dir() and not folder.name.startswith("_")
        if folder.name not in ("bench", "hydra")
    }


def _check_selected_names(overrides: list[str]) -> None:
    """Catch ``attention=dto`` and ``experiment=sentimnt_quick`` before Hydra, with close
    matches (Hydra lists every option on several lines, and silently skips a misspelled
    *optional* group such as experiment)."""
    presets = _preset_groups()
    for arg in overrides:
        key, sep, value = arg.partition("=")
        key = key.lstrip("+~")
        if not sep or value.startswith(("choice(", "range(", "glob(")):
            continue
        options = registry.available(key) if key in registry.KINDS else presets.get(key)
        if options is not None and key != "experiment" and value.strip() in ("", "null"):
            hint = " (logger=none logs nothing)" if key == "logger" else ""
            raise registry.AttnbenchError(
                f"{arg!r} selects no {key}; choose one of: {', '.join(options)}{hint}"
            )
        for name in value.split(","):
            name = name.strip().strip("[]").strip()  # callbacks=[a,b] selects several
            if not name or name == "null":
                continue
            if key in registry.KINDS:
                registry.get(key, name)
            elif key in presets and name not in presets[key]:
                raise registry.AttnbenchError(
                    f"unknown {key} preset {name!r}; {registry.suggest(name, presets[key])}"
                )


def _hydra_error_line(e: Exception, argv: list[str]) -> str:
    """Hydra's refusal (several lines, no close matches) as one line with a suggestion."""
    from omegaconf import OmegaConf

    from attnbench.config import compose_plain

    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    key = getattr(e, "key", None) or ""
    if "Could not override" in first or "not in struct" in str(e):
        key = first.split("'")[1] if "'" in first else key
        parent, _, leaf = key.rpartition(".")
        try:
            base = compose_plain([])
            node = OmegaConf.select(base, parent) if parent else base
            keys = sorted(str(k) for k in node.keys()) if hasattr(node, "keys") else []
        except Exception:  # the suggestion is a courtesy; the refusal stands without it
            keys = []
        prefix = f"{parent}." if parent else ""
        full = [f"{prefix}{k}" for k in keys if not k.startswith("_")]
        hint = registry.suggest(key, full) if keys else "see attnbench --cfg job"
        return f"unknown config key {key!r}; {hint} (add a new key with +{key}=...)"
    if first.startswith("Ambiguous value"):
        return (
            f"{first}; to sweep the values add -m, to pass a list write key=[a,b] "
            "(quoted in the shell)"
        )
    if "Error parsing override" in first or "no viable alternative" in first:
        return _unparsable(argv) or f"{first}; overrides are key=value"
    return first


def _unparsable(argv: list[str]) -> str | None:
    """The one override Hydra's grammar rejects, quoted, with the reason."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    for arg in argv:
        if arg.startswith("-"):
            continue
        try:
            parser.parse_overrides([arg])
        except Exception as e:  # Hydra's grammar errors come in several types
            lines = [
                ln.strip()
                for ln in str(e).splitlines()
                if ln.strip() and not ln.strip().startswith(("Error parsing", "See http"))
            ]
            reason = lines[0] if lines else type(e).__name__
            return (
                f"cannot parse the override {arg!r}: {reason}; write key=value, quoting "
                "values with brackets, commas or spaces"
            )
    return None


def _let_hydra_errors_raise() -> None:
    """Let Hydra's composition errors reach us as exceptions (not printed + exit 1)."""
    os.environ.setdefault("HYDRA_FULL_ERROR", "1")


def _in_sweep() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.get().mode == RunMode.MULTIRUN


def train_task(cfg) -> float | None:
    """The Hydra task function: one run; returns ``optimized_metric`` for sweepers.

    A failing job records why in its own directory (see :func:`attnbench.train.record_failure`).
    Alone, it exits at once (2 for bad input, 1 otherwise); in a sweep the other jobs go on
    and the sweep's end lists the failures (:class:`attnbench.sweep.SweepReport`)."""
    from attnbench.launch import apply_threads
    from attnbench.train import record_failure, run

    try:
        apply_threads(cfg)  # its share of the cores under a parallel launcher
        summary = run(cfg)
    except registry.AttnbenchError as e:
        record_failure(str(e))
        if not _in_sweep():
            _fail(str(e))
        print(f"attnbench: error: {e}", file=sys.stderr)
        return None
    except Exception as e:  # a bug: alone, Hydra shows the traceback; a sweep goes on
        record_failure(registry.one_line(e))
        if not _in_sweep():
            raise
        print(f"attnbench: job failed: {registry.one_line(e)}", file=sys.stderr)
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
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from attnbench import sweep
    from attnbench.config import register_resolvers, store_plugins
    from attnbench.optuna_sweeper import register as register_sweeper

    store_plugins()
    register_resolvers()
    register_sweeper()  # hydra/sweeper=optuna (hparams_search=...)
    sys.argv = [sys.argv[0], *argv]
    _let_hydra_errors_raise()
    try:
        hydra.main(version_base="1.3", config_path="pkg://attnbench.conf", config_name="config")(
            train_task
        )()
    except (HydraException, OmegaConfBaseException) as e:  # composition, not a job's error
        _fail(_hydra_error_line(e, argv))
    except registry.AttnbenchError as e:  # a sweeper's refusal (hparams_search=...)
        _fail(str(e))
    except ValueError as e:  # Hydra's own argument checks (--cfg with -m, ...)
        if not _raised_by_hydra(e):
            raise
        _fail(str(e).strip().splitlines()[0])
    if sweep.failed_jobs:  # set by SweepReport at the end of a multirun
        sys.exit(1)


def _raised_by_hydra(e: BaseException) -> bool:
    tb = e.__traceback__
    while tb.tb_next is not None:
        tb = tb.tb_next
    return f"{os.sep}hydra{os.sep}" in tb.tb_frame.f_code.co_filename


# One line per verb, for --help and for the "did you mean" of an unknown one.
VERBS = {
    "train": "(the default) one run, or a sweep with -m: attnbench task=pos attention=dot",
    "list": "plugins and their parameters: attnbench list [KIND] [PATTERN]",
    "check": "run a kind's contract on a plugin: attnbench check KIND NAME [param=value ...]",
    "bench": "benchmarks: attnbench bench attention|startup|throughput|maps|report [--help]",
    "download": "fetch a real data set with checksums: attnbench download NAME [--help]",
    "report": "mean ± std of finished runs: attnbench report DIR... [--metric M] "
    "[--plot FILE] [--html FILE] [--help]",
    "maps": "attention maps of a finished run: attnbench maps RUN_DIR [--index 0,5] [--text S] "
    "[--stats] [--help]",
    "plot": "learning curves of finished runs: attnbench plot RUN_DIR... [--metric M] "
    "[--x step|epoch] [--group F] [--out FILE]",
    "study": "a claim checked by a sweep, a figure and a verdict: attnbench study list | "
    "NAME [--quick] [--seeds N] [--out DIR] [overrides...]",
}
USAGE_VERBS = tuple(VERBS)
HELP_HEADER = """\
attnbench: compare attention mechanisms. Compose a run by naming plugins:
  attnbench task=sentiment model=transformer attention=dot posenc=sinusoidal seed=1
Set a plugin's parameters with <group>.<param>=value (attention.dropout=0.1).
"""


HELP_FOOTER = """\
Sweep with -m (attnbench -m posenc=none,sinusoidal,learned); print the composed
config with --cfg job; resume with ckpt_path=<run>/checkpoints/last.ckpt.
Hydra's own options: --hydra-help.
"""


def _help(overrides: list[str]) -> None:
    """Our own --help: Hydra's lists groups by deep-copying its config repository once per
    group (seconds); the registry and conf/ already know the options."""
    from omegaconf import OmegaConf

    from attnbench.config import compose_plain

    groups = {kind: registry.available(kind) for kind in registry.KINDS}
    groups.update(_preset_groups())
    print(HELP_HEADER)
    print("== Verbs ==")
    for verb, line in VERBS.items():
        print(f"  {verb:<9} {line}")
    print()
    print("== Config groups (group=option) ==")
    for group in sorted(groups):
        print(f"{group}: {', '.join(groups[group])}")
    print("\n== Config ==\nOverride anything in the config (foo.bar=value)\n")
    print(OmegaConf.to_yaml(compose_plain(overrides)))
    print(HELP_FOOTER)


def _exit(status: int | None) -> None:
    if status:
        sys.exit(status)


def versions_line() -> str:
    """attnbench's version and those of the stack it runs on (no heavy import)."""
    import platform
    from importlib import metadata

    import attnbench

    found = [f"attnbench {attnbench.__version__}"]
    for dist in ("torch", "pytorch-lightning", "hydra-core", "torchmetrics"):
        try:
            found.append(f"{dist} {metadata.version(dist)}")
        except metadata.PackageNotFoundError:
            found.append(f"{dist} (not installed)")
    return ", ".join([*found, f"Python {platform.python_version()}"])


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] in (["--version"], ["-V"]):
        print(versions_line())
        return None
    verb = argv[0] if argv and argv[0] in USAGE_VERBS else "train"
    if argv and argv[0] == verb:
        argv = argv[1:]
    try:
        if verb == "list":
            from attnbench.listing import main as list_main

            return list_main(argv)
        if verb == "maps":
            from attnbench.analysis.maps import main as maps_main

            return _exit(maps_main(argv))
        if verb == "plot":
            from attnbench.analysis.plot import main as plot_main

            return _exit(plot_main(argv))
        if verb == "study":
            from attnbench.study.cli import main as study_main

            return _exit(study_main(argv))
        if verb == "check":
            from attnbench.testing import main as check_main

            return _exit(check_main(argv))
        if verb == "download":
            from attnbench.data.download import main as download_main

            return download_main(argv)
        if verb == "report":
            from attnbench.study.show import main as report_main

            return report_main(argv)
        if verb == "bench" and argv[:1] in (["startup"], ["throughput"], ["maps"], ["report"]):
            from attnbench.perf import main as perf_main

            return perf_main(argv)
        if verb == "bench":
            from attnbench.bench import main as bench_main

            return bench_main(argv)
        if argv and "=" not in argv[0] and not argv[0].startswith(("-", "~", "+")):
            raise registry.AttnbenchError(
                f"unknown command {argv[0]!r} (neither a verb nor a key=value override); "
                f"{registry.suggest(argv[0], list(USAGE_VERBS)).replace('available', 'verbs')}"
            )
        overrides = [a for a in argv if not a.startswith("-")]
        _check_selected_names(overrides)
        from attnbench.extras import check_overrides

        check_overrides(overrides)  # hydra/launcher=joblib without the extra: one line
        if "--help" in argv or "-h" in argv:
            return _help(overrides)
    except BrokenPipeError:  # `attnbench list | head`: the reader has all it wanted
        sys.stderr.close()
        return None
    except registry.AttnbenchError as e:
        _fail(str(e))
    _hydra_main(argv)


if __name__ == "__main__":
    main()
