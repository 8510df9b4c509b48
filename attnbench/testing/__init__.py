"""Conformance checks: the contract of each plugin kind, runnable on any plugin.

``attnbench check KIND NAME [param=value ...]`` and, in a test suite,
``assert_conforms("attention", MyAttention)`` run every property of the kind's contract on
small random inputs and report one :class:`Check` per property: pass or fail with the
measured error, or skip with the reason (a capability the plugin does not declare is
skipped, and the plugin must then *refuse* that use: the fail-closed property).

Modelled on gymnasium's environment checker: a contract that a third-party plugin can be
held to exactly as the built-in ones are. Sizes are tiny and seeds fixed, so one plugin
takes about a second on a CPU; exactness checks run in float64. No Lightning here.

One module per kind's contract (:mod:`.attention`, :mod:`.posenc`, :mod:`.backbone`,
:mod:`.task`), :mod:`.contracts` to run them by kind, :mod:`.cli` for the command.
"""

from attnbench.testing._core import Check
from attnbench.testing.attention import check_attention
from attnbench.testing.backbone import check_backbone, stub_task
from attnbench.testing.cli import main
from attnbench.testing.contracts import assert_conforms, check, failed
from attnbench.testing.posenc import check_posenc
from attnbench.testing.task import check_task

__all__ = [
    "Check",
    "assert_conforms",
    "check",
    "check_attention",
    "check_backbone",
    "check_posenc",
    "check_task",
    "failed",
    "main",
    "stub_task",
]
