"""Shared test helpers: compose configs the way Hydra does and run them in-process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from attnbench.config import compose  # noqa: F401  (re-exported for tests)

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def fast_dev_run(overrides: list[str], output_dir: Path) -> dict:
    """One training + validation + test batch through the real harness."""
    from attnbench.train import run

    cfg = compose(
        ["trainer.fast_dev_run=true", "trainer.accelerator=cpu", "logger=none", *overrides],
        output_dir,
    )
    return run(cfg)


# The installed console script. Not `python -m attnbench`: run from the repository root that
# would import the source tree, whose plugins/ and conf/ only exist in the installed package.
ATTNBENCH = [str(Path(sys.executable).with_name("attnbench"))]


def cli(
    *args: str, env: dict | None = None, cwd: Path | None = None, timeout: int = 600
) -> subprocess.CompletedProcess:
    """Run the installed ``attnbench`` console script."""
    full_env = {**os.environ, "PYTHONWARNINGS": "ignore", **(env or {})}
    return subprocess.run(
        [*ATTNBENCH, *args], capture_output=True, text=True, env=full_env, cwd=cwd, timeout=timeout
    )


@pytest.fixture(autouse=True, scope="session")
def _user_cache_dir(tmp_path_factory):
    """Tests (and the commands they start) cache preprocessed data in a directory of the
    session's, never in the user's own ~/.cache."""
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("xdg-cache"))
    os.environ.pop("ATTNBENCH_CACHE", None)


@pytest.fixture
def shared_data() -> Path:
    if not (SHARED_DATA / "README.md").is_file():
        pytest.skip(f"real data sets not found at {SHARED_DATA}")
    return SHARED_DATA


STUDY_OUTPUTS = ("report.md", "results.json", "figure.png", "figure.svg", "report.html")


def quick_study(request, tmp_path_factory) -> tuple[str, Path, subprocess.CompletedProcess]:
    """Body of each study test file's module-scoped ``quick`` fixture: ``attnbench study NAME
    --quick`` (NAME = the fixture's param) into a fresh directory, one thread."""
    out = tmp_path_factory.mktemp(request.param)
    done = cli(
        "study",
        request.param,
        "--quick",
        "--out",
        str(out),
        env={"OMP_NUM_THREADS": "1"},
        timeout=900,
    )
    return request.param, out, done


def assert_study_outputs(out: Path) -> None:
    for file in STUDY_OUTPUTS:
        assert (out / file).is_file() and (out / file).stat().st_size > 0, file
