"""Optional extras: launchers and the Optuna search install apart from the core
(``pip install 'attnbench[launchers]'``, ``'attnbench[optuna]'``). Selecting one that is
not installed is one line naming the extra, before Hydra lists every option it has."""

from __future__ import annotations

import importlib.util

from attnbench import registry

# What a config choice needs: (importable module, distribution, extra).
JOBLIB = ("hydra_plugins.hydra_joblib_launcher", "hydra-joblib-launcher", "launchers")
SUBMITIT = ("hydra_plugins.hydra_submitit_launcher", "hydra-submitit-launcher", "launchers")
OPTUNA = ("optuna", "optuna", "optuna")
NEEDS = {
    "hydra/launcher": {
        "joblib": JOBLIB,
        "submitit_local": SUBMITIT,
        "submitit_slurm": SUBMITIT,
        "slurm": SUBMITIT,  # conf/hydra/launcher/slurm.yaml extends submitit_slurm
    },
    "hydra/sweeper": {"optuna": OPTUNA},
    "hparams_search": {"*": OPTUNA},  # every preset runs hydra/sweeper=optuna
}


def installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # a missing parent package
        return False


def require(module: str, what: str) -> None:
    """Raise a one-line ConfigError naming the extra when ``module`` is not installed."""
    for needs in NEEDS.values():
        for mod, dist, extra in needs.values():
            if mod == module and not installed(module):
                raise registry.ConfigError(
                    f"{what} needs {dist}, which is not installed; pip install 'attnbench[{extra}]'"
                )


def check_overrides(overrides: list[str]) -> None:
    """The extras the command line's choices need (``hydra/launcher=joblib``, ...)."""
    for arg in overrides:
        key, sep, value = arg.partition("=")
        needs = NEEDS.get(key.lstrip("+"))
        if not sep or needs is None:
            continue
        for choice in value.split(","):
            need = needs.get(choice.strip()) or needs.get("*")
            if need is not None and choice.strip() not in ("", "null"):
                require(need[0], f"{key.lstrip('+')}={choice.strip()}")
