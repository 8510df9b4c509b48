"""The architecture's rules, checked on the source: plugins reach each other only through the
registry, the core has no import cycles and no Lightning internals, and a source checkout
works like an installed wheel."""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO


def _imports(path: Path, package: str) -> set[str]:
    """Absolute names of the modules a file imports, anywhere in it (lazy imports count:
    they are cycles all the same once both functions run)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the file's package
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            found.add(module)
            found |= {f"{module}.{alias.name}" for alias in node.names}
    return found


def _module_name(path: Path, root: Path, prefix: str) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    parts = parts[:-1] if parts[-1] == "__init__" else parts
    return ".".join((prefix, *parts))


def test_no_plugin_imports_another_plugin():
    offenders = []
    for path in sorted((REPO / "plugins").rglob("*.py")):
        name = _module_name(path, REPO / "plugins", "attnbench.plugins")
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        others = {m for m in _imports(path, package) if m.startswith("attnbench.plugins")}
        offenders += [f"{path.relative_to(REPO)} imports {m}" for m in sorted(others)]
    assert not offenders, offenders


def test_the_core_has_no_import_cycles():
    root = REPO / "attnbench"
    modules = {_module_name(p, root, "attnbench"): p for p in root.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        graph[name] = {m for m in _imports(path, package) if m in modules and m != name}
    graph["attnbench"] = set()  # the package re-exports; its submodules import it freely

    def cycle_from(start: str) -> list[str] | None:
        stack, seen = [(start, [start])], set()
        while stack:
            node, trail = stack.pop()
            for nxt in graph.get(node, ()):
                if nxt == start:
                    return [*trail, start]
                if nxt not in seen:
                    seen.add(nxt)
                    stack.append((nxt, [*trail, nxt]))
        return None

    cycles = [c for c in map(cycle_from, sorted(graph)) if c]
    assert not cycles, [" -> ".join(c) for c in cycles]


def test_no_lightning_private_attributes():
    offenders = [
        f"{p.relative_to(REPO)}:{i}"
        for folder in ("attnbench", "plugins")
        for p in sorted((REPO / folder).rglob("*.py"))
        for i, line in enumerate(p.read_text().splitlines(), 1)
        if re.search(r"""[.'"]_trainer\b""", line)  # obj._trainer or getattr(obj, "_trainer")
    ]
    assert not offenders, offenders


@pytest.fixture
def source_copy(tmp_path) -> Path:
    """The repository's source as a fresh clone has it, never installed from there."""
    for folder in ("attnbench", "plugins", "conf"):
        shutil.copytree(
            REPO / folder, tmp_path / folder, ignore=shutil.ignore_patterns("__pycache__")
        )
    shutil.copy(REPO / "pyproject.toml", tmp_path)
    return tmp_path


def _python_m(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "COLUMNS": "200"}
    env.pop("ATTNBENCH_PLUGIN_PATH", None)
    return subprocess.run(
        [sys.executable, "-m", "attnbench", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=300,
    )


def test_python_m_attnbench_from_a_source_checkout_finds_the_builtin_plugins(source_copy):
    listed = _python_m(["list", "attention"], source_copy)
    assert listed.returncode == 0, listed.stderr
    assert "dot" in listed.stdout and "[built-in]" in listed.stdout
    probe = subprocess.run(
        [sys.executable, "-c", "import attnbench.plugins as p; print(p.__path__)"],
        capture_output=True,
        text=True,
        cwd=source_copy,
        timeout=120,
    )
    assert str(source_copy / "plugins") in probe.stdout, probe.stderr  # the checkout's own
    composed = _python_m(["attention=truncated", "--cfg", "job"], source_copy)
    assert composed.returncode == 0, composed.stderr
    assert "_name_: truncated" in composed.stdout
