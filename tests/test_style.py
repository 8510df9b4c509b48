"""The code style is enforced, not hoped for: ruff's linter and formatter are clean."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO


def _ruff() -> str:
    beside = Path(sys.executable).with_name("ruff")  # the dev extra's, in the same venv
    found = str(beside) if beside.is_file() else shutil.which("ruff")
    if found is None:
        pytest.skip("ruff is not installed (pip install '.[dev]')")
    return found


@pytest.mark.parametrize("command", [["check"], ["format", "--check"]], ids=" ".join)
def test_ruff_is_clean(command):
    result = subprocess.run(
        [_ruff(), *command, "attnbench", "plugins", "tests"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
