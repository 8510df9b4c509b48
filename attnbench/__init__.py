"""attnbench: compare attention mechanisms with plugins composed by name.

``import attnbench`` is cheap: it imports no plugin, no torch, no Lightning, no wandb.
"""

from attnbench.registry import (
    KINDS,
    AttnbenchError,
    available,
    build,
    get,
    register,
)

__all__ = ["KINDS", "AttnbenchError", "available", "build", "get", "register"]
__version__ = "0.1.0"
