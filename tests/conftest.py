"""Shared test helpers: compose configs the way Hydra does and run them in-process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def compose(overrides: list[str], output_dir: Path):
    """The composed config for ``overrides``, with Hydra's runtime pointing at output_dir."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    from attnbench.cli import register_resolvers
    from attnbench.config import store_plugins

    store_plugins()
    register_resolvers()
    with initialize_config_module(config_module="attnbench.conf", version_base="1.3"):
        cfg = hydra_compose("config", overrides=overrides, return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(output_dir)
        cfg.hydra.job.name = "test"
    HydraConfig().set_config(cfg)
    return cfg


def fast_dev_run(overrides: list[str], output_dir: Path) -> dict:
    """One training + validation + test batch through the real harness."""
    from attnbench.train import run

    cfg = compose(["trainer.fast_dev_run=true", "trainer.accelerator=cpu", "logger=none",
                   *overrides], output_dir)
    return run(cfg)


def cli(*args: str, env: dict | None = None, cwd: Path | None = None,
        timeout: int = 600) -> subprocess.CompletedProcess:
    """Run the installed console script (falls back to ``python -m attnbench``)."""
    full_env = {**os.environ, "PYTHONWARNINGS": "ignore", **(env or {})}
    return subprocess.run([sys.executable, "-m", "attnbench", *args], capture_output=True,
                          text=True, env=full_env, cwd=cwd, timeout=timeout)


@pytest.fixture
def shared_data() -> Path:
    if not (SHARED_DATA / "README.md").is_file():
        pytest.skip(f"real data sets not found at {SHARED_DATA}")
    return SHARED_DATA
