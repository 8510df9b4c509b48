"""What a study plugin declares: the claim, the sweep, the metrics, the figure and the
verdict rule. Stays free of torch and Lightning: ``attnbench study list`` only reads these.

A training study returns :class:`Sweep` objects from :meth:`Study.sweeps` (run through
Hydra's multirun); a measuring study (a benchmark, no training) overrides
:meth:`Study.measure` instead. Either way the numbers end up as :class:`Results` rows, the
figure and the verdict are drawn from those rows only, and a test can hand-make rows to
check the verdict rule.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    pass

VERDICTS = ("supported", "refuted", "mixed", "inconclusive")  # inconclusive: numbers missing


@dataclass
class Sweep:
    """One Hydra multirun: ``attnbench -m *overrides axis=v1,v2,... seed=1,2,3``.

    ``group`` are the run fields (report's --group: ``model.name``, ``task.dataset``) whose
    runs differ by seed only; the table pools each group's seeds into mean ± std."""

    name: str  # its folder under <out>/runs/ and its label in the table
    overrides: list[str]  # fixed for every job: experiment=compare_pos, task.dataset=ud_ewt
    axes: dict[str, list[Any]]  # swept: {"model": ["mlp", "cnn"]}
    group: list[str]  # e.g. ["model.name"]


@dataclass(frozen=True)
class Stat:
    mean: float
    std: float  # sample std over seeds; NaN for one seed
    n: int

    @property
    def missing(self) -> bool:
        return self.n == 0 or math.isnan(self.mean)

    def spread(self) -> float:
        """The std, 0 where a single seed gives none (so rules stay defined)."""
        return 0.0 if math.isnan(self.std) else self.std

    def text(self) -> str:
        """``mean ± std (n=...)`` with four decimals: a Stat among a verdict's numbers."""
        return f"{self.mean:.4f} ± {self.spread():.4f} (n={self.n})"


MISSING = Stat(math.nan, math.nan, 0)


def beats(high: Stat, low: Stat) -> bool:
    """``high``'s mean exceeds ``low``'s by more than both standard deviations together
    (the rule most verdicts use for "A is better than B"); False when either is missing."""
    if high.missing or low.missing:
        return False
    return high.mean - low.mean > high.spread() + low.spread()


def stat_of(values: Iterable[float]) -> Stat:
    values = [v for v in values if v is not None and math.isfinite(v)]
    if not values:
        return MISSING
    std = statistics.stdev(values) if len(values) > 1 else math.nan
    return Stat(statistics.fmean(values), std, len(values))


@dataclass
class Results:
    """A study's numbers: rows of ``{"sweep", <group fields>, "metric", "mean", "std", "n",
    ...}`` (one per group and metric), and the jobs that did not finish ok."""

    rows: list[dict[str, Any]]
    failed: list[dict[str, str]] = field(default_factory=list)  # {"status", "run", "reason"}
    seconds: float | None = None  # a measuring study's own wall time (its benchmark)

    def stat(self, metric: str, sweep: str | None = None, **where: Any) -> Stat:
        """The row for ``metric`` whose fields match ``where`` (``model.name`` is passed as
        ``model_name``, ``task.train_fraction`` as ``task_train_fraction``: the first
        underscore is the dot), or MISSING when no run gave it (a failed job, say)."""
        wanted = {k.replace("_", ".", 1): v for k, v in where.items()}
        for row in self.rows:
            if row.get("metric") != metric or (sweep is not None and row.get("sweep") != sweep):
                continue
            if all(row.get(k) == v for k, v in wanted.items()):
                return Stat(float(row["mean"]), _nan(row.get("std")), int(row.get("n", 1)))
        return MISSING

    def values(self, field_name: str, metric: str, sweep: str | None = None) -> list[Any]:
        """The values of a group field present for ``metric``, in row order."""
        found = [
            r.get(field_name)
            for r in self.rows
            if r.get("metric") == metric and (sweep is None or r.get("sweep") == sweep)
        ]
        return list(dict.fromkeys(found))


def _nan(value: Any) -> float:
    return math.nan if value is None else float(value)


def is_rate(metric: str) -> bool:
    """Accuracies, F1 and agreement fractions (shown x100); times, memories and slopes
    are not."""
    leaf = metric.rsplit("/", 1)[-1]
    return any(word in leaf for word in ("acc", "f1", "agree"))


@dataclass
class Verdict:
    verdict: str  # one of VERDICTS
    numbers: dict[str, Any]  # the numbers the rule looked at, by name
    summary: str = ""  # one sentence: which part of the rule held

    def __post_init__(self) -> None:
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict {self.verdict!r} is not one of {', '.join(VERDICTS)}")


def checked(checks: dict[str, bool], numbers: dict[str, Any], refuted: bool) -> Verdict:
    """The verdict of a rule made of named checks: supported when every check holds,
    refuted when ``refuted`` (the rule's own condition), mixed otherwise. The checks join
    the numbers; the summary names those that held and those that failed."""
    said = "held: " + (", ".join(k for k, ok in checks.items() if ok) or "nothing")
    said += "; failed: " + (", ".join(k for k, ok in checks.items() if not ok) or "nothing")
    verdict = "supported" if all(checks.values()) else "refuted" if refuted else "mixed"
    return Verdict(verdict, {**numbers, **checks}, said)
