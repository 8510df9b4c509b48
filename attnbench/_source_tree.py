"""Run from a source checkout as from an installed wheel.

The wheel maps the repository's top-level ``plugins/`` and ``conf/`` to ``attnbench.plugins``
and ``attnbench.conf`` (pyproject's package-dir). In a checkout, where ``python -m attnbench``
or ``python -m pytest`` from the repository root imports the source tree, the same names are
made to resolve by adding the repository root to the package's search path.
"""

from __future__ import annotations

from pathlib import Path

MAPPED = ("plugins", "conf")  # top-level folders the wheel installs inside the package


def expose(package_path: list[str]) -> None:
    """Add the checkout's root to ``attnbench.__path__`` when the package lies in one."""
    package = Path(__file__).resolve().parent
    root = package.parent
    if (package / "plugins").exists() or not (root / "pyproject.toml").is_file():
        return  # installed: the wheel holds plugins/ and conf/ itself
    if all((root / name).is_dir() for name in MAPPED) and str(root) not in package_path:
        package_path.append(str(root))
