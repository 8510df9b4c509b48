"""``attnbench study list`` and ``attnbench study NAME [--quick] [--seeds N] [--out DIR]
[overrides...]``: run a study plugin's sweep (or resume it), then write its report."""

from __future__ import annotations

import argparse
import shlex
import sys
import time
import warnings
from pathlib import Path

from attnbench import registry
from attnbench.registry import ConfigError


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="attnbench study",
        description="Run a study (a claim checked by a sweep, a figure and a verdict rule) "
        "and write report.md, results.json, figure.png/.svg and report.html. Re-running "
        "skips finished jobs and resumes interrupted ones. `attnbench study list` names them.",
    )
    p.add_argument("name", help="the study's name, or 'list'")
    p.add_argument(
        "overrides",
        nargs="*",
        help="Hydra overrides for every job (trainer.max_epochs=2, hydra/launcher=joblib); "
        "one naming a swept key replaces the sweep's values (model=cnn,rnn)",
    )
    p.add_argument("--quick", action="store_true", help="tiny settings (minutes, for tests)")
    p.add_argument("--seeds", type=int, default=None, help="seeds 1..N (default: the study's)")
    p.add_argument("--out", type=Path, default=None, help="output directory (default studies/NAME)")
    return p


def list_studies() -> None:
    with warnings.catch_warnings():  # broken plugins are listed below instead
        warnings.simplefilter("ignore")
        found = registry.plugins("study")
        broken = [b for b in registry.broken() if "study" in b.error or "studies" in b.module]
    width = max((len(p.name) for p in found), default=0)
    for plugin in found:
        claim = plugin.cls.claim or plugin.doc
        print(f"{plugin.name:<{width}}  {claim}  [{plugin.source}]")
    for b in broken:
        print(f"broken  {b.module}: {b.error}  [{b.source}]")


def main(argv: list[str]) -> int:
    args = parser().parse_intermixed_args(argv)
    if args.name == "list":
        list_studies()
        return 0
    plugin = registry.get("study", args.name)  # unknown: one line with "did you mean"
    if args.seeds is not None and args.seeds < 1:
        raise ConfigError(f"--seeds {args.seeds}: give at least 1 seed")
    bad = [o for o in args.overrides if "=" not in o and not o.startswith("~")]
    if bad:
        raise ConfigError(
            f"{bad[0]!r} is not an override; write key=value (e.g. trainer.max_epochs=2)"
        )
    from attnbench.study.base import Verdict
    from attnbench.study.run import UNFINISHED, measures, run_study
    from attnbench.study.write import Written, write_outputs

    study = plugin.cls()
    out = args.out or Path("studies") / args.name
    start = time.perf_counter()
    outcome = run_study(study, out, args.quick, args.seeds, args.overrides)
    verdict = study.verdict(outcome.results)
    if any(f["status"] in UNFINISHED for f in outcome.results.failed):
        # a rule applied to part of the sweep is no finding: withhold it, say what it gave
        verdict = Verdict(
            "inconclusive",
            verdict.numbers,
            f"incomplete: some jobs were stopped or never ran (listed below); run the same "
            f"command again to finish them. On the jobs that did, the rule gives "
            f"{verdict.verdict} ({verdict.summary})",
        )
    seeds = args.seeds or (study.quick_seeds if args.quick else study.seeds)
    written = Written(
        name=args.name,
        study=study,
        results=outcome.results,
        verdict=verdict,
        commands=outcome.commands,
        command=shlex.join(["attnbench", "study", *argv]),
        quick=args.quick,
        seeds=0 if measures(study) else seeds,
        wall_seconds=time.perf_counter() - start,
        run_seconds=outcome.run_seconds,
    )
    paths = write_outputs(written, out)
    print(f"verdict: {verdict.verdict}. {verdict.summary}")
    print(f"wrote {', '.join(map(str, paths))}")
    failed = [f for f in outcome.results.failed if f["status"] != "skipped"]
    if failed:
        print(
            f"attnbench study: {len(failed)} job(s) did not finish ok; report.md lists them",
            file=sys.stderr,
        )
        return 1
    return 0
