"""``hydra/sweeper=optuna``: a Hydra Sweeper on current Optuna.

Written here because hydra-optuna-sweeper 1.3.0 (its latest release) pins optuna<3; optuna
2.10 then fails to open a SQLite study under SQLAlchemy 2 (checked: AssertionError in
get_current_version), and a study that resumes after a crash needs one. What this adds:

- the direction comes from the metric (``optimized_metric``, else the task's own monitor):
  accuracy up, loss down (:func:`attnbench.search.study_direction`);
- the study lives in ``<sweep dir>/optuna.db``: re-running the same command with
  ``hydra.sweep.dir=<that dir>`` continues it to ``n_trials``, relaunching the trials a
  crash left running in their own job directories;
- the best trial is printed and written to ``<sweep dir>/best.yaml``, a config that reruns it
  (``attnbench --config-dir <sweep dir> --config-name best``).

Hydra accepts sweepers only from the ``hydra_plugins`` namespace. attnbench's top level holds
no such package (and an editable install's namespace packages are invisible to Hydra's plugin
scan), so the CLI calls :func:`register` at start: it adds the class to Hydra's plugin list
with ``Plugins.register`` (Hydra's API for this) under the name ``hydra_plugins.attnbench_optuna``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from hydra.plugins.sweeper import Sweeper

from attnbench import registry, search

PLUGIN_MODULE = "hydra_plugins.attnbench_optuna"
STUDY_NAME = "attnbench"
# The search's own settings, stored with the study: resuming with other ones is refused.
SIGNATURE_ATTR = "attnbench_search"


class OptunaSweeper(Sweeper):
    __module__ = PLUGIN_MODULE  # where Hydra accepts plugins from (see register)

    def __init__(
        self,
        n_trials: int = 20,
        n_jobs: int = 1,
        direction: str | None = None,
        sampler: Any = None,
        params: dict[str, str] | None = None,
        storage_file: str = "optuna.db",
    ) -> None:
        self.n_trials = int(n_trials)
        self.n_jobs = int(n_jobs)
        self.direction = direction
        self.sampler_config = sampler
        self.params = dict(params or {})
        self.storage_file = storage_file
        self.config = None
        self.launcher = None
        self.hydra_context = None

    def setup(self, *, hydra_context, task_function, config) -> None:
        from hydra.core.plugins import Plugins

        self.hydra_context = hydra_context
        self.config = config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    # -- the search
    def sweep(self, arguments: list[str]) -> Any:
        from attnbench.extras import require

        require("optuna", "hydra/sweeper=optuna")
        import optuna
        from omegaconf import OmegaConf

        if self.n_trials < 1 or self.n_jobs == 0:
            raise registry.ConfigError(
                f"hydra.sweeper.n_trials={self.n_trials}, n_jobs={self.n_jobs}; both must be "
                ">= 1 (n_jobs -1: one per core)"
            )
        fixed, space = self._search_space(arguments)
        if not space:
            raise registry.ConfigError(
                "the search has nothing to search over; give hydra.sweeper.params or a sweep "
                "such as optim.lr=tag(log,interval(1e-4,1e-2))"
            )
        metric, direction = self._metric_and_direction(fixed, space)
        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        storage = f"sqlite:///{(sweep_dir / self.storage_file).resolve()}"
        study = optuna.create_study(
            study_name=STUDY_NAME, storage=storage, direction=direction, load_if_exists=True
        )
        sampler = self._sampler(len(study.trials))
        if sampler is not None:
            study.sampler = sampler
        self._check_same_search(study, fixed, space, metric, direction)
        print(
            f"attnbench: optuna search of {metric} ({direction}), {self.n_trials} trials, "
            f"{len(study.trials)} already in {sweep_dir / self.storage_file}"
        )
        returns = []
        # Trials a crash left running: rerun in their own job directories (same numbers).
        stale = [t for t in study.trials if t.state == optuna.trial.TrialState.RUNNING]
        returns += self._launch(study, [(t.number, t.params) for t in stale], fixed)
        while (started := _started(study)) < self.n_trials:
            count = min(self._batch_size(), self.n_trials - started)
            asked = [study.ask(space) for _ in range(count)]
            batch = [(trial.number, trial.params) for trial in asked]
            returns += self._launch(study, batch, fixed)
        self._report_best(study, fixed, metric, sweep_dir)
        return returns

    def _search_space(self, arguments: list[str]) -> tuple[list[str], dict[str, Any]]:
        """Fixed overrides (every trial) and the searched keys' distributions; a sweep on the
        command line wins over the preset's for the same key."""
        from hydra.core.override_parser.overrides_parser import OverridesParser

        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        lines = [f"{k}={v}" for k, v in self.params.items()] + list(arguments)
        fixed: dict[str, str] = {}
        space: dict[str, Any] = {}
        for override in parser.parse_overrides(lines):
            key = override.get_key_element()
            fixed.pop(key, None)
            space.pop(key, None)
            if override.is_sweep_override():
                space[key] = search.distribution(override)
            else:
                fixed[key] = override.input_line
        return list(fixed.values()), space

    def _metric_and_direction(self, fixed: list[str], space: dict[str, Any]) -> tuple[str, str]:
        """The metric every trial returns and its direction; a preset's fixed
        ``params: {optimized_metric: val/loss}`` or ``task=...`` counts, as the trials see it."""
        swept = [key for key in ("optimized_metric", "task") if key in space]
        if swept:
            raise registry.ConfigError(
                f"a search cannot sweep {swept[0]}: one study optimises one metric of one "
                f"task; run one search per {swept[0]}"
            )
        given = {k.lstrip("+~"): v for k, _, v in (line.partition("=") for line in fixed)}
        metric = given.get("optimized_metric") or self.config.get("optimized_metric")
        metric = None if metric in (None, "null") else metric
        task = registry.get("task", given.get("task") or self.config.task._name_).cls
        monitor = getattr(task, "monitor", None)
        metric = metric or monitor
        if metric is None:
            raise registry.ConfigError("the search needs optimized_metric=<metric, e.g. val/acc>")
        mode = getattr(task, "mode", None)
        return metric, search.study_direction(metric, self.direction, monitor, mode)

    def _sampler(self, done: int) -> Any:
        """The configured sampler; a resumed study's seed moves on by the trials it holds,
        so the resumed search does not draw the first trials' values again."""
        if self.sampler_config is None:
            return None  # Optuna's default (TPE)
        from hydra.utils import instantiate
        from omegaconf import OmegaConf

        config = OmegaConf.to_container(self.sampler_config, resolve=True)
        if done and config.get("seed") is not None:
            config["seed"] = int(config["seed"]) + done
        return instantiate(config)

    def _batch_size(self) -> int:
        if self.n_jobs > 0:
            return self.n_jobs
        from attnbench.launch import usable_cores

        return max(1, usable_cores() + 1 + self.n_jobs)  # joblib's meaning of -1, -2 ...

    def _check_same_search(self, study, fixed, space, metric, direction) -> None:
        signature = {
            "fixed": sorted(fixed),
            "space": {k: repr(v) for k, v in sorted(space.items())},
            "metric": metric,
            "direction": direction,
        }
        stored = study.user_attrs.get(SIGNATURE_ATTR)
        if stored is None:
            study.set_user_attr(SIGNATURE_ATTR, signature)
        elif stored != signature:
            changed = [k for k in signature if stored.get(k) != signature[k]]
            raise registry.ConfigError(
                f"{self.config.hydra.sweep.dir} holds a study with other settings "
                f"({', '.join(changed)} differ); resume it with the same command, or search "
                "in a new hydra.sweep.dir"
            )

    def _launch(self, study, batch, fixed) -> list[Any]:
        """Run trials (number, params) whose numbers are consecutive as one launcher batch,
        so each job's directory is <trial number>_<overrides>; tell Optuna each outcome."""
        returns = []
        for group in _consecutive(batch):
            jobs = [
                [*fixed, *(f"{k}={search.override_value(v)}" for k, v in params.items())]
                for _, params in group
            ]
            self.validate_batch_is_legal(jobs)
            results = self.launcher.launch(jobs, initial_job_idx=group[0][0])
            for (number, _), result in zip(group, results):
                value, reason = _outcome(result)
                if reason is None:
                    study.tell(number, value)
                else:
                    study.tell(number, state=_failed())
                    print(f"attnbench: trial {number} failed: {reason}")
            returns.append(results)
        return returns

    def _report_best(self, study, fixed, metric, sweep_dir: Path) -> None:
        import optuna
        import yaml
        from omegaconf import OmegaConf

        done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
        if not done:
            print(f"attnbench: no trial of {sweep_dir} finished ok; no best.yaml written")
            return
        best = study.best_trial
        overrides = [*fixed, *(f"{k}={search.override_value(v)}" for k, v in best.params.items())]
        if self.config.get("optimized_metric") is not None:  # a preset may have set it
            overrides.append(f"optimized_metric={metric}")
        choices = OmegaConf.to_container(self.config.hydra.runtime.choices)
        config = search.best_config(overrides, choices)
        overrides = [o for o in overrides if not o.startswith(("hparams_search=", "hydra"))]
        header = (
            f"# Best trial of the Optuna search in this directory: trial {best.number} of "
            f"{len(study.trials)}, {metric} = {best.value:.6g} ({study.direction.name.lower()})\n"
            f"# Its overrides: {' '.join(overrides)}\n"
            f"# Rerun it: attnbench --config-dir {sweep_dir} --config-name best\n"
        )
        (sweep_dir / "best.yaml").write_text(header + yaml.safe_dump(config, sort_keys=False))
        params = "  ".join(f"{k}={search.override_value(v)}" for k, v in best.params.items())
        print(
            f"attnbench: best {metric}={best.value:.4f} (trial {best.number} of "
            f"{len(study.trials)}): {params}\n"
            f"attnbench: rerun it with: attnbench --config-dir {sweep_dir} --config-name best"
        )


def _consecutive(batch: list[tuple[int, dict]]) -> list[list[tuple[int, dict]]]:
    groups: list[list[tuple[int, dict]]] = []
    for item in sorted(batch, key=lambda x: x[0]):
        if groups and groups[-1][-1][0] + 1 == item[0]:
            groups[-1].append(item)
        else:
            groups.append([item])
    return groups


def _started(study: Any) -> int:
    """Trials run or running; enqueued ones (WAITING) are still to be asked for."""
    from optuna.trial import TrialState

    return sum(t.state != TrialState.WAITING for t in study.trials)


def _failed() -> Any:
    from optuna.trial import TrialState

    return TrialState.FAIL


def _outcome(result: Any) -> tuple[float | None, str | None]:
    """(value, None) for a job that finished ok with a finite metric, else (None, why). The
    job's summary.json decides, not only the returned number: a diverged run is no result."""
    try:
        value = result.return_value  # re-raises the job's exception
    except Exception as e:
        text = str(e).strip().splitlines()
        return None, f"{type(e).__name__}: {text[0][:200]}" if text else type(e).__name__
    summary = Path(result.hydra_cfg.hydra.runtime.output_dir) / "summary.json"
    try:
        status = json.loads(summary.read_text()).get("status")
    except (OSError, ValueError):
        status = "missing"
    if status != "ok":
        return None, f"summary.json status {status}"
    if value is None or not math.isfinite(float(value)):
        return None, f"the job returned {value} for the metric"
    return float(value), None


def register() -> None:
    """Make ``hydra/sweeper=optuna`` (conf/hydra/sweeper/optuna.yaml) instantiable: Hydra
    takes plugins only from the ``hydra_plugins`` namespace and imports the target by name,
    so this module is also ``hydra_plugins.attnbench_optuna`` (an alias in sys.modules)."""
    import sys
    import types

    from hydra.core.plugins import Plugins

    plugins = Plugins.instance()  # scans the installed hydra_plugins first
    if "hydra_plugins" not in sys.modules:
        try:
            import hydra_plugins  # noqa: F401  (installed plugins' namespace)
        except ImportError:  # no Hydra plugin installed: an empty namespace of our own
            namespace = types.ModuleType("hydra_plugins")
            namespace.__path__ = []
            sys.modules["hydra_plugins"] = namespace
    sys.modules.setdefault(PLUGIN_MODULE, sys.modules[__name__])
    plugins.register(OptunaSweeper)
