"""Rebuild a finished run's model from its directory, without Lightning.

A run directory holds ``.hydra/config.yaml`` (the composed config) and
``checkpoints/last.ckpt`` (a Lightning checkpoint, read with ``weights_only=True``: no code
runs from it). The model is built exactly as the harness builds it (attnbench.builders, the
parameter matcher when the run matched widths) as a plain :class:`attnbench.task.Network`,
and gets the checkpoint's ``net.`` weights.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

from attnbench import registry
from attnbench.builders import Plugins, build_backbone, selected
from attnbench.config import register_resolvers
from attnbench.registry import ConfigError
from attnbench.task import Network, Task

CONFIG = Path(".hydra") / "config.yaml"
CHECKPOINT = Path("checkpoints") / "last.ckpt"
# Checkpoints written before the modules moved under LitModel.net had them at the top.


@dataclass
class LoadedRun:
    directory: Path
    cfg: Any  # the run's composed config (DictConfig)
    plugins: Plugins  # as built: widths matched when the run matched them
    task: Task  # set up: its data and vocabularies are loaded
    net: Network  # in eval mode, with the checkpoint's weights


def _first_line(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return f"{type(e).__name__}: {lines[0][:160]}" if lines else type(e).__name__


def read_config(run_dir: Path):
    """The run's composed config; a one-line ConfigError when the directory is no run."""
    if not run_dir.is_dir():
        raise ConfigError(f"{run_dir}: no such directory; pass a finished run's directory")
    path = run_dir / CONFIG
    if not path.is_file():
        raise ConfigError(
            f"{run_dir}: no {CONFIG} here, so this is not a run directory; pass the directory "
            "a run wrote (it holds .hydra/, checkpoints/ and summary.json)"
        )
    register_resolvers()  # the config may name attnbench's resolvers
    try:
        return OmegaConf.load(path)
    except Exception as e:
        raise ConfigError(f"{path}: not a readable config ({_first_line(e)})") from None


def read_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    """The Network's state dict from the run's last checkpoint (``weights_only=True``)."""
    path = run_dir / CHECKPOINT
    if not path.is_file():
        raise ConfigError(
            f"{run_dir}: no {CHECKPOINT}; the run has not finished an epoch (or was "
            "trained elsewhere)"
        )
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated, random bytes, or a pickle that wants to run code
        raise ConfigError(f"{path}: not a loadable checkpoint ({_first_line(e)})") from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise ConfigError(f"{path}: not a Lightning checkpoint (no state_dict)")
    upgraded = Network.upgrade_keys(dict(checkpoint["state_dict"]))
    return {key[4:]: value for key, value in upgraded.items() if key.startswith("net.")}


def _seed(seed: int) -> None:
    """As the run seeded before setting up its task (pl.seed_everything, without Lightning)."""
    random.seed(seed)
    torch.manual_seed(seed)


def load_run(run_dir: str | Path) -> LoadedRun:
    """Config, task (set up) and network (eval mode, trained weights) of a finished run."""
    run_dir = Path(run_dir)
    cfg = read_config(run_dir)
    state = read_weights(run_dir)  # before the data: a bad checkpoint fails fast
    plugins = selected(cfg)
    _seed(int(cfg.get("seed", 0) or 0))
    task_name, task_params = plugins["task"]
    task = registry.build("task", task_name, data_dir=str(cfg.data_dir), **task_params)
    task.setup()
    if cfg.get("match_params"):  # the run's width came from the parameter matcher
        from attnbench.param_match import match_widths

        plugins = match_widths(plugins, task, **OmegaConf.to_container(cfg.match_params))
    backbone = build_backbone(plugins, task)
    d = backbone.d_model
    net = Network(task.build_embedder(d), backbone, task.build_head(d))
    try:
        net.load_state_dict(state)
    except RuntimeError as e:
        raise ConfigError(
            f"{run_dir / CHECKPOINT}: its weights do not fit the model its config builds "
            f"({_first_line(e)})"
        ) from None
    return LoadedRun(run_dir, cfg, plugins, task, net.eval())
