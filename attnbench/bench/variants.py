"""A variant by name, a reference or an attention plugin: its module built with its
parameters, how its visited pairs are counted and whether it runs on a graph."""

from __future__ import annotations

import argparse

import torch
from torch import nn

from attnbench import registry
from attnbench.bench.refs import REFERENCES
from attnbench.registry import ConfigError


def build_variant(name: str, args: argparse.Namespace) -> nn.Module:
    """A reference, or the attention plugin with its parameters from ``args.params``."""
    if name in REFERENCES:
        return REFERENCES[name](args.d_model, args.heads)
    params = args.params.get(name, {})
    return registry.build("attention", name, d_model=args.d_model, heads=args.heads, **params)


def variant_work(name: str, args: argparse.Namespace) -> tuple[str, int]:
    """(how the variant's visited pairs are counted, its window or 0)."""
    if name in REFERENCES:
        return REFERENCES[name].work, 0
    work = getattr(args, "work", {}).get(name, "dense")
    if work != "window":
        return work, 0
    window = args.params.get(name, {}).get("window")
    if window is None:
        window = registry.get("attention", name).options.get("window")
    if not isinstance(window, int):
        raise ConfigError(
            f"bench config: work of {name!r} is window but it has no integer window "
            "parameter; give it one under params or count it as dense"
        )
    return work, window


def needs_edges(name: str) -> bool:
    cls = REFERENCES[name] if name in REFERENCES else registry.get("attention", name).cls
    return bool(cls.needs_graph)


def compiled(module: nn.Module, args: argparse.Namespace) -> nn.Module:
    """``torch.compile(module)`` under --compile; each size compiles afresh."""
    if not getattr(args, "compile", False):
        return module
    torch._dynamo.reset()  # a new module per size: no recompilation limit to reach
    return torch.compile(module)
