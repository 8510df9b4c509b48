"""The base class of study plugins. Its own module, apart from the data types in
:mod:`attnbench.study.base`, because its default figure comes from
:mod:`attnbench.study.figures`, which draws from those types."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from attnbench.study.base import Results, Sweep, Verdict

if TYPE_CHECKING:
    from matplotlib.figure import Figure


class Study:
    """Base class of study plugins (``@attnbench.register("study", "name")``).

    Class attributes state the study; methods give its sweep, its extra per-run numbers,
    its figure and its verdict. Only ``claim``, ``rule``, :meth:`sweeps` (or
    :meth:`measure`) and :meth:`verdict` are required."""

    claim: str = ""  # the lecture's claim, quoted in one sentence
    rule: str = ""  # the verdict rule in words, printed in the report; verdict() implements it
    metrics: tuple[str, ...] = ("test/acc",)  # aggregated over seeds, shown in the table
    seeds: int = 3  # full version
    quick_seeds: int = 2  # --quick (two, so a std exists and the rule is exercised)
    percent: bool = True  # show accuracies x100 in the table

    # -- the sweep (training studies)
    def sweeps(self, quick: bool) -> list[Sweep]:
        return []

    def run_metrics(self, run_dir: Path) -> dict[str, float]:
        """Extra numbers of one finished ok run that its summary.json lacks (accuracy on a
        subset, a permutation test); computed once and cached beside the run. Names listed
        in ``metrics`` are aggregated like the summary's own."""
        return {}

    # -- or a measurement (no training)
    def measure(self, out: Path, quick: bool, device: str) -> Results | None:
        """A study that measures instead of training: write what it needs under ``out`` and
        return its rows. A study that overrides this is a measuring study (it takes no
        overrides or --seeds); the default, None, means it trains through :meth:`sweeps`."""
        return None

    def setup(self, quick: bool) -> str:
        """What the report's setup section should say beyond the sweep commands (a measuring
        study's settings, say); empty by default."""
        return ""

    # -- what the numbers say
    def verdict(self, results: Results) -> Verdict:
        raise NotImplementedError

    def figure(self, results: Results) -> Figure | None:
        """The study's figure; the default draws the first metric of every sweep with
        report's figure (bars, or lines along a numeric field)."""
        from attnbench.study.figures import default_figure

        return default_figure(results, self.metrics[0], self.percent)

    def table_metrics(self) -> tuple[str, ...]:
        return self.metrics
