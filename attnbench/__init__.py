"""attnbench: compare attention mechanisms with plugins composed by name.

``import attnbench`` is cheap: it imports no plugin, no torch, no Lightning, no wandb. The
plugin base classes (``attnbench.Attention``, ``ScoreAttention``, ``PositionalEncoding``,
``Backbone``, ``Task``, ``Study``) and ``Ctx`` are imported on first use.
"""

from importlib import import_module

from attnbench import _source_tree
from attnbench.registry import (
    KINDS,
    AttnbenchError,
    ConfigError,
    available,
    build,
    get,
    register,
)

_LAZY = {
    "Attention": "attnbench.nn.attention",
    "ScoreAttention": "attnbench.nn.attention",
    "PositionalEncoding": "attnbench.nn.posenc",
    "Backbone": "attnbench.nn.backbone",
    "Task": "attnbench.task",
    "ClassificationTask": "attnbench.task",
    "Ctx": "attnbench.nn.ctx",
    "Study": "attnbench.study.plugin",
    "Sweep": "attnbench.study.base",
    "Verdict": "attnbench.study.base",
}

__all__ = [
    "KINDS",
    "AttnbenchError",
    "ConfigError",
    "available",
    "build",
    "get",
    "register",
    *_LAZY,
]
__version__ = "0.1.0"

_source_tree.expose(__path__)


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'attnbench' has no attribute {name!r}")
