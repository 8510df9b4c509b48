"""What a run found: a Row per (variant, N), the ratios between rows that the config's
comparisons ask for, and the targets a ratio is checked against."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass
class Row:
    variant: str
    n: int
    batch: int
    heads: int
    d_model: int
    time_ms: float = math.nan
    peak_mb: float = math.nan
    status: str = "ok"
    note: str = ""
    dtype: str = "fp32"
    tflops: float = math.nan  # useful forward+backward FLOPs / time (see flops.py)
    peak_fraction: float = math.nan  # tflops / the device's peak for dtype; NaN if unknown


FIELDS = {"time_ms": "time", "peak_mb": "peak memory"}  # a Row field -> its name in a key
AT = ("each", "top", "growth")


@dataclass(frozen=True)
class Comparison:
    """numerator's field / denominator's, at every size (each) or the largest (top); growth:
    the numerator's field at the largest size / its own at the next-largest."""

    numerator: str
    field: str
    at: str
    denominator: str | None = None
    label: str | None = None  # the field's name in the key (default: FIELDS)
    max: float | None = None  # a target: the ratio must be <= max (PASS/FAIL in the table)
    min: float | None = None  # a target: the ratio must be >= min

    def evaluate(self, rows: list[Row], sizes: list[int]) -> dict[str, float]:
        label = self.label or FIELDS[self.field]
        top = max(sizes)
        if self.at == "growth":
            if len(set(sizes)) < 2:
                return {}
            prev = sorted(set(sizes))[-2]
            key = f"{self.numerator} {label} growth N={prev}->{top} (x{top / prev:g} length)"
            growth = _ratio(
                _get(rows, self.numerator, top, self.field),
                _get(rows, self.numerator, prev, self.field),
            )
            return {key: growth}
        return {
            f"{self.numerator}/{self.denominator} {label} @N={n}": _ratio(
                _get(rows, self.numerator, n, self.field),
                _get(rows, self.denominator, n, self.field),
            )
            for n in (sizes if self.at == "each" else [top])
        }


@dataclass(frozen=True)
class Target:
    """A bound a reported value must meet: value <= max and/or value >= min (< for probes)."""

    max: float | None = None
    min: float | None = None
    strict: bool = False  # max is exclusive ("< 2 GB")

    def text(self) -> str:
        parts = [f"{'<' if self.strict else '<='} {self.max:g}"] if self.max is not None else []
        return " and ".join([*parts, *([f">= {self.min:g}"] if self.min is not None else [])])

    def verdict(self, value: float) -> str:
        if math.isnan(value):  # a variant that failed, ran out of memory or was skipped
            return "FAIL (not measured)"
        ok = self.max is None or (value < self.max if self.strict else value <= self.max)
        ok = ok and (self.min is None or value >= self.min)
        return "PASS" if ok else "FAIL"


def _get(rows: list[Row], variant: str, n: int, field: str) -> float:
    for r in rows:
        if r.variant == variant and r.n == n and r.status == "ok":
            return getattr(r, field)
    return math.nan


def _ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator else math.nan


def ratios(
    rows: list[Row], sizes: list[int], comparisons: list[Comparison], extra: dict[str, float]
) -> dict[str, float]:
    """The config's comparisons, in its order, then ``extra`` (NaN where a variant is missing)."""
    found: dict[str, float] = {}
    for comparison in comparisons:
        found.update(comparison.evaluate(rows, sizes))
    found.update(extra)
    return found
