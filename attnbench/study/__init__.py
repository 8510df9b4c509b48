"""Studies: a claim of the lecture notes checked by one command (``attnbench study NAME``):
a sweep through Hydra's multirun, mean ± std over seeds, a figure and a verdict rule fixed
in code. A study plugin is one file under plugins/studies/ (or any plugin source) that
subclasses :class:`Study`; see plugins/studies/ for examples."""

from attnbench.study.base import (
    MISSING,
    VERDICTS,
    Results,
    Stat,
    Sweep,
    Verdict,
    beats,
    checked,
    stat_of,
)
from attnbench.study.plugin import Study

__all__ = [
    "MISSING",
    "VERDICTS",
    "Results",
    "Stat",
    "Study",
    "Sweep",
    "Verdict",
    "beats",
    "checked",
    "stat_of",
]
