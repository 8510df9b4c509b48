"""Plugin signatures -> Hydra ConfigStore nodes, and the checks run on a composed config.

Every registered plugin becomes the option ``<kind>=<name>`` with a node holding its
settable constructor parameters plus ``_name_`` (which plugin to build); a parameter without
a default is Hydra's mandatory ``???``. Nodes are left open (not struct) so a misspelled key
reaches :func:`plugin_params`, whose error names the allowed parameters and the close
matches instead of Hydra's bare "not in struct"; it also checks every value against the
constructor's annotations and ranges (:mod:`attnbench.params`).
"""

from __future__ import annotations

import enum
import os
from pathlib import Path
from typing import Any

from attnbench import registry
from attnbench.params import SUPPLIED, BadValue, param_specs

NAME_KEY = "_name_"
MISSING = "???"  # Hydra's mandatory value: a required parameter the user must set
_PRIMITIVES = (bool, int, float, str, type(None))


def _to_yaml_value(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, tuple):
        return list(value)
    return value


def _is_storable(value: Any) -> bool:
    if isinstance(value, (list, tuple)):
        return all(_is_storable(v) for v in value)
    return isinstance(value, _PRIMITIVES)


def plugin_node(plugin: registry.Plugin) -> dict[str, Any]:
    """The parameters a user sets: defaults as they are, required ones as Hydra's mandatory
    ``???`` (settable as ``attention.x=3``, reported by :func:`plugin_params` if not)."""
    node = {NAME_KEY: plugin.name}
    for spec in param_specs(plugin):
        if spec.supplied:
            continue
        if spec.required:
            node[spec.name] = MISSING
            continue
        value = _to_yaml_value(spec.default)
        if _is_storable(value):
            node[spec.name] = value
    return node


def store_plugins() -> None:
    """Make every registered plugin an option of its kind's config group."""
    from hydra.core.config_store import ConfigStore
    from omegaconf import OmegaConf

    cs = ConfigStore.instance()
    for plugin in registry.plugins():
        node = OmegaConf.create(plugin_node(plugin))
        OmegaConf.set_struct(node, False)
        cs.store(
            group=plugin.kind, name=plugin.name, node=node, provider=f"attnbench ({plugin.source})"
        )


def _show(value: Any) -> str:
    """A value as it is written on the command line."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    return repr(value)


def _as_dict(node: Any) -> tuple[dict[str, Any], set[str]]:
    """A group node's values, interpolations resolved, and the keys still missing (``???``)."""
    from omegaconf import OmegaConf

    if isinstance(node, dict):
        return dict(node), {k for k, v in node.items() if v == MISSING}
    missing = {k for k in node if OmegaConf.is_missing(node, k)}
    return dict(OmegaConf.to_container(node, resolve=True)), missing


def plugin_params(kind: str, node: Any) -> tuple[str, dict[str, Any]]:
    """Split a composed group node into (plugin name, checked parameters).

    Every value is checked against the constructor's annotation and range (see
    :mod:`attnbench.params`); the first bad one fails with one line naming the parameter,
    the value and what is allowed."""
    params, missing = _as_dict(node)
    name = params.pop(NAME_KEY, None)
    if name is None:
        raise registry.AttnbenchError(
            f"the {kind} config has no {NAME_KEY}; select a plugin with {kind}=<name> "
            f"(see `attnbench list {kind}`)"
        )
    specs = {spec.name: spec for spec in param_specs(registry.get(kind, name))}
    settable = sorted(n for n, spec in specs.items() if not spec.supplied)
    checked = {}
    for key, value in params.items():
        spec = specs.get(key)
        if spec is None:
            raise registry.PluginParameterError(
                f"{kind} {name!r} has no parameter {key!r}; "
                f"{registry.suggest(key, settable).replace('available', 'allowed')}"
            )
        if spec.supplied:
            raise registry.PluginParameterError(
                f"{kind}.{key} is passed to {kind} {name!r} by the harness, not set in the "
                f"{kind} config; set {SUPPLIED[kind][key]} instead"
            )
        if key in missing:
            continue  # reported below with the required ones never given
        try:
            checked[key] = spec.check(value)
        except BadValue as e:
            raise registry.ConfigError(
                f"{kind}.{key}={_show(value)} {e.reason} for {kind} {name!r}; allowed: {e.allowed}"
            ) from None
    for spec in specs.values():
        if spec.required and not spec.supplied and spec.name not in checked:
            raise registry.PluginParameterError(
                f"{kind} {name!r} needs parameter {spec.name!r} ({spec.type_name}); "
                f"set it with {kind}.{spec.name}=VALUE"
            )
    return name, checked


def _wandb_offline() -> bool:
    """Offline unless the user has a wandb account configured (or asked for a mode)."""
    mode = os.environ.get("WANDB_MODE")
    if mode:
        return mode in ("offline", "dryrun", "disabled")
    if os.environ.get("WANDB_API_KEY"):
        return False
    netrc = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    return not (netrc.is_file() and "api.wandb.ai" in netrc.read_text(errors="ignore"))


def run_id(run_dir: str) -> str:
    """A stable id per run directory: resuming into it continues the same wandb run."""
    import hashlib

    return hashlib.sha1(str(Path(run_dir).resolve()).encode()).hexdigest()[:16]


# The metric a run monitors and its direction, known once the task is built: the harness sets
# them before it instantiates the callbacks (conf/callbacks/*.yaml read them by resolver).
RUN_MONITOR: dict[str, str] = {}


def _monitor() -> str:
    if "monitor" not in RUN_MONITOR:
        raise registry.ConfigError("${attnbench.monitor:} is only known inside a run")
    metric = RUN_MONITOR["monitor"]
    if not metric.startswith(("val/", "train/")):  # callbacks watch it during training
        raise registry.ConfigError(
            f"a callback monitors optimized_metric={metric!r}, which is logged only after "
            "training; monitor a val/ metric (optimized_metric=val/...)"
        )
    return metric


def _monitor_mode() -> str:
    _monitor()
    return RUN_MONITOR["mode"]


def _launch_resolvers() -> list:
    from attnbench.launch import RESOLVERS  # job threads, wandb group and name under sweeps

    return list(RESOLVERS.items())


def register_resolvers() -> None:
    from omegaconf import OmegaConf

    for name, resolver in (
        ("wandb_offline", _wandb_offline),
        ("run_id", run_id),
        ("monitor", _monitor),
        ("monitor_mode", _monitor_mode),
        *_launch_resolvers(),
    ):
        if not OmegaConf.has_resolver(f"attnbench.{name}"):
            OmegaConf.register_new_resolver(f"attnbench.{name}", resolver)


def default_plugins() -> dict[str, str]:
    """The plugin conf/config.yaml selects for each kind when nothing else is said."""
    from importlib import resources

    from omegaconf import OmegaConf

    defaults = OmegaConf.load(resources.files("attnbench.conf") / "config.yaml").defaults
    chosen = {}
    for entry in defaults:
        if isinstance(entry, str) or len(entry) != 1:
            continue
        [(group, name)] = entry.items()
        if group in registry.KINDS:
            chosen[group] = name
    return chosen


def signature_text(plugin: registry.Plugin) -> str:
    parts = [f"{k}={v!r}" for k, v in plugin.options.items()]
    return ", ".join(parts)


def compose_plain(overrides: list[str], config_name: str = "config"):
    """The composed config without Hydra's own node, interpolations unresolved."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module

    store_plugins()
    register_resolvers()
    with initialize_config_module(config_module="attnbench.conf", version_base="1.3"):
        return hydra_compose(config_name, overrides=overrides)


def compose(overrides: list[str], output_dir: str | Path, config_name: str = "config"):
    """Compose the config as the CLI would, with Hydra's runtime output dir set (for tests,
    notebooks and benchmarks that call :func:`attnbench.train.run` in-process)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    store_plugins()
    register_resolvers()
    with initialize_config_module(config_module="attnbench.conf", version_base="1.3"):
        cfg = hydra_compose(config_name, overrides=overrides, return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(output_dir)
        cfg.hydra.job.name = "attnbench"
    HydraConfig().set_config(cfg)
    return cfg
