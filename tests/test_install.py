"""A non-editable install (a built wheel) finds its configs and built-in plugins anywhere."""

from __future__ import annotations

import json
import os
import site
import subprocess
import sys
import sysconfig
import zipfile

from conftest import REPO


def test_wheel_in_fresh_venv_runs_from_any_directory(tmp_path):
    wheels = tmp_path / "wheels"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheels), str(REPO)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert build.returncode == 0, build.stderr[-3000:]
    [wheel] = wheels.glob("attnbench-*.whl")
    # the wheel ships every module of the source tree (pyproject lists the packages one by
    # one) and nothing else (a stale build/ folder would add modules deleted since)
    installed_as = {
        "attnbench": "attnbench",
        "plugins": "attnbench/plugins",
        "conf": "attnbench/conf",
    }
    source = {
        f"{package}/{p.relative_to(REPO / top)}"
        for top, package in installed_as.items()
        for p in (REPO / top).rglob("*.py")
    }
    shipped = {n for n in zipfile.ZipFile(wheel).namelist() if n.endswith(".py")}
    assert not shipped - source, f"the wheel ships modules not in the source: {shipped - source}"
    missing = source - shipped
    assert not missing, f"pyproject.toml's packages leave out {sorted(missing)[:5]}"

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    python = venv / "bin" / "python"
    pip = subprocess.run(
        [str(python), "-m", "pip", "install", "--no-deps", "-q", str(wheel)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert pip.returncode == 0, pip.stderr[-3000:]
    # The venv borrows the dependencies (torch, Lightning, ...) from this interpreter, but
    # attnbench itself comes only from the wheel: this interpreter's .pth files (an
    # editable install) are not processed for a path added this way.
    venv_site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    deps = [sysconfig.get_paths()["purelib"], *site.getsitepackages()]
    with open(os.path.join(venv_site, "zz_deps.pth"), "w") as f:
        f.write("\n".join(dict.fromkeys(deps)) + "\n")

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "ATTNBENCH_PLUGIN_PATH")}
    where = subprocess.run(
        [
            str(python),
            "-c",
            "import attnbench, attnbench.conf; "
            "print(attnbench.__file__); print(attnbench.get('attention', 'dot')"
            ".source)",
        ],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert where.returncode == 0, where.stderr[-3000:]
    path, source = where.stdout.split()
    assert path.startswith(venv_site) and source == "built-in"

    attnbench = venv / "bin" / "attnbench"
    listed = subprocess.run(
        [str(attnbench), "list"],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert listed.returncode == 0 and "transformer" in listed.stdout and "built-in" in listed.stdout

    checked = subprocess.run(  # the conformance checker ships in the wheel too
        [str(attnbench), "check", "attention", "dot"],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr[-3000:]

    ran = subprocess.run(
        [
            str(attnbench),
            "trainer.fast_dev_run=true",
            "callbacks=early_stopping",
            "hydra.run.dir=run",
        ],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert ran.returncode == 0, ran.stderr[-3000:]
    summary = json.loads((elsewhere / "run" / "summary.json").read_text())
    assert summary["plugins"]["task"]["name"] == "sentiment"
    assert (elsewhere / "run" / ".hydra" / "config.yaml").is_file()
