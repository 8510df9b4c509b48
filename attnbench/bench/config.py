"""The benchmark's config, conf/bench/attention.yaml (``--config FILE`` for another): which
ratios and probes are reported, how each variant's work is counted and the variants'
constructor parameters, so that the benchmark's code names no attention plugin. Loading
checks it: every variant it names exists and every parameter is one its variant takes.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import MISSING, dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from attnbench import registry
from attnbench.bench.flops import WORK
from attnbench.bench.refs import REFERENCES
from attnbench.bench.results import AT, FIELDS, Comparison, Target
from attnbench.config import NAME_KEY, plugin_params
from attnbench.registry import ConfigError

if TYPE_CHECKING:  # for annotations only: importlib.resources.abc is Python 3.11+
    from importlib.resources.abc import Traversable


@dataclass(frozen=True)
class Probe:
    """One variant measured once at its own setting."""

    variant: str
    n: int
    d_model: int
    heads: int
    batch: int
    max_mb: float | None = None  # a target: its peak MiB must stay below this


@dataclass
class BenchConfig:
    params: dict[str, dict[str, Any]]  # variant -> constructor parameters
    comparisons: list[Comparison]
    probes: list[Probe]
    work: dict[str, str] = field(default_factory=dict)  # variant -> one of WORK (default dense)

    def targets(self, found: dict[str, float], sizes: list[int]) -> dict[str, Target]:
        """The target of each key in ``found`` that has one."""
        targets: dict[str, Target] = {}
        for c in self.comparisons:
            if c.max is not None or c.min is not None:
                keys = c.evaluate([], sizes)  # the keys this comparison reports (values NaN)
                targets.update({key: Target(c.max, c.min) for key in keys if key in found})
        for probe in self.probes:
            if probe.max_mb is not None:
                for key in found:
                    if key.startswith(f"{probe.variant} peak MiB @"):
                        targets[key] = Target(probe.max_mb, strict=True)
        return targets


def default_config() -> Traversable:
    return resources.files("attnbench.conf") / "bench" / "attention.yaml"


def _entry(cls: type, entry: Any, where: str) -> Any:
    """``cls(**entry)`` when entry is a mapping with exactly cls's keys, else a ConfigError."""
    if not isinstance(entry, dict):
        raise ConfigError(
            f"{where}: expected a mapping of {', '.join(f.name for f in fields(cls))}"
        )
    allowed = [f.name for f in fields(cls)]
    for key in entry:
        if key not in allowed:
            hint = registry.suggest(str(key), allowed).replace("available", "allowed")
            raise ConfigError(f"{where}: no key {key!r}; {hint}")
    missing = [f.name for f in fields(cls) if f.default is MISSING and f.name not in entry]
    if missing:
        raise ConfigError(f"{where}: missing {', '.join(missing)}")
    return cls(**entry)


def _known(name: Any, where: str) -> None:
    known = [*registry.available("attention"), *REFERENCES]
    if name not in known:
        raise ConfigError(
            f"{where}: unknown variant {name!r}; {registry.suggest(str(name), known)}"
        )


def _comparison(entry: Any, where: str) -> Comparison:
    c = _entry(Comparison, entry, where)
    if not isinstance(c.field, str) or c.field not in FIELDS:
        raise ConfigError(f"{where}: field {c.field!r} is not one of {', '.join(FIELDS)}")
    if c.at not in AT:
        raise ConfigError(f"{where}: at {c.at!r} is not one of {', '.join(AT)}")
    for bound in ("max", "min"):
        _number(getattr(c, bound), f"{where}: {bound}")
    if (c.at == "growth") != (c.denominator is None):
        raise ConfigError(f"{where}: give a denominator with at: each or top, none with growth")
    for name in (c.numerator, c.denominator):
        if name is not None:
            _known(name, where)
    return c


def _probe(entry: Any, where: str) -> Probe:
    probe = _entry(Probe, entry, where)
    _known(probe.variant, where)
    sizes = {"n": probe.n, "d_model": probe.d_model, "heads": probe.heads, "batch": probe.batch}
    for key, value in sizes.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ConfigError(f"{where}: {key} must be a positive integer, not {value!r}")
    if probe.d_model % probe.heads:
        raise ConfigError(f"{where}: d_model {probe.d_model} is not divisible by heads")
    _number(probe.max_mb, f"{where}: max_mb")
    return probe


def _number(value: Any, where: str) -> None:
    """A target bound: absent or a finite number."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if value is not None and not ok:
        raise ConfigError(f"{where} must be a number, not {value!r}")


def _work(entries: Any, where: str) -> dict[str, str]:
    if not isinstance(entries, dict):
        raise ConfigError(f"{where}: work maps a variant to one of {', '.join(WORK)}")
    for name, kind in entries.items():
        _known(name, f"{where}: work")
        if kind not in WORK:
            raise ConfigError(
                f"{where}: work of {name!r} is {kind!r}, not one of {', '.join(WORK)}"
            )
    return dict(entries)


def _check_params(name: str, params: dict[str, Any], where: str) -> None:
    if name in REFERENCES:
        if params:
            raise ConfigError(f"{where}: the reference {name!r} takes no parameters")
        return
    plugin_params("attention", {NAME_KEY: name, **params})


def load_config(path: Path | Traversable | None = None) -> BenchConfig:
    """The benchmark's config (conf/bench/attention.yaml unless ``path``), checked: every
    variant it names exists and every parameter is one its variant takes."""
    path = path or default_config()
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as e:
        raise ConfigError(f"bench config {path}: {e.strerror or e}") from None
    except yaml.YAMLError as e:
        raise ConfigError(
            f"bench config {path} is not valid YAML: {registry.one_line(e)}"
        ) from None
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise ConfigError(
            f"bench config {path}: expected a mapping of params, work, comparisons, probes"
        )
    for key in data:
        if key not in ("params", "work", "comparisons", "probes"):
            hint = registry.suggest(str(key), ["comparisons", "params", "probes", "work"])
            raise ConfigError(f"bench config {path}: unknown key {key!r}; {hint}")
    params = data.get("params") or {}
    if not isinstance(params, dict) or not all(isinstance(p, dict) for p in params.values()):
        raise ConfigError(f"bench config {path}: params maps a variant to {{parameter: value}}")
    for name, kv in params.items():
        _known(name, f"bench config {path}: params")
        _check_params(name, kv, f"bench config {path}: params")
    return BenchConfig(
        params={name: dict(kv) for name, kv in params.items()},
        comparisons=[
            _comparison(c, f"bench config {path}: comparisons[{i}]")
            for i, c in enumerate(data.get("comparisons") or [])
        ],
        probes=[
            _probe(c, f"bench config {path}: probes[{i}]")
            for i, c in enumerate(data.get("probes") or [])
        ],
        work=_work(data.get("work") or {}, f"bench config {path}"),
    )


def parse_param(text: str) -> tuple[str, str, Any]:
    """``NAME.KEY=VALUE`` -> (variant, parameter, value parsed as YAML: 32 is an int)."""
    target, eq, value = text.partition("=")
    name, dot, key = target.partition(".")
    if not (eq and dot and name and key):
        raise argparse.ArgumentTypeError(
            f"{text!r}: give VARIANT.PARAMETER=VALUE, a constructor parameter of a variant"
        )
    try:
        return name, key, yaml.safe_load(value)
    except yaml.YAMLError:
        return name, key, value


def variant_params(
    config: BenchConfig,
    variants: list[str],
    window: int | None,
    overrides: list[tuple[str, str, Any]],
) -> dict[str, dict[str, Any]]:
    """Constructor parameters of the benchmarked variants, later sources winning: the
    config's ``params``, ``--window`` (every variant with a window parameter), ``--param``."""
    params = {v: dict(config.params.get(v, {})) for v in variants}
    if window is not None:
        for v in variants:
            if v not in REFERENCES and "window" in registry.get("attention", v).options:
                params[v]["window"] = window
    for name, key, value in overrides:
        if name not in params:
            _known(name, f"--param {name}.{key}")
            raise ConfigError(f"--param {name}.{key}: {name!r} is not among the --variants")
        params[name][key] = value
        _check_params(name, params[name], f"--param {name}.{key}")
    return {v: kv for v, kv in params.items() if kv}
