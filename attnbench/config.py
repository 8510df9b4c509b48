"""Plugin signatures -> Hydra ConfigStore nodes, and the checks run on a composed config.

Every registered plugin becomes the option ``<kind>=<name>`` with a node holding its
settable constructor parameters plus ``_name_`` (which plugin to build). Nodes are left
open (not struct) so a misspelled key reaches :func:`validate`, whose error names the
allowed parameters and the close matches instead of Hydra's bare "not in struct".
"""

from __future__ import annotations

import enum
from pathlib import Path
from typing import Any

from attnbench import registry

NAME_KEY = "_name_"
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
    node = {NAME_KEY: plugin.name}
    for key, default in plugin.options.items():
        value = _to_yaml_value(default)
        if _is_storable(value):
            node[key] = value
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


def _type_ok(value: Any, default: Any) -> bool:
    if default is None or value is None:
        return True
    if isinstance(default, bool):
        return isinstance(value, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(default, int):
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(default, str):
        return isinstance(value, str)
    return True


def plugin_params(kind: str, node: Any) -> tuple[str, dict[str, Any]]:
    """Split a composed group node into (plugin name, checked parameters)."""
    from omegaconf import OmegaConf

    params = OmegaConf.to_container(node, resolve=True) if not isinstance(node, dict) else node
    params = dict(params)
    name = params.pop(NAME_KEY, None)
    if name is None:
        raise registry.AttnbenchError(
            f"the {kind} config has no {NAME_KEY}; select a plugin with {kind}=<name> "
            f"(see `attnbench list {kind}`)"
        )
    registry.check_params(kind, name, params)
    options = registry.get(kind, name).options
    for key, value in params.items():
        default = options[key]
        if not _type_ok(value, default):
            raise registry.PluginParameterError(
                f"{kind}.{key}={value!r} has the wrong type: {kind} {name!r} expects "
                f"{type(default).__name__} (default {default!r})"
            )
    return name, params


def signature_text(plugin: registry.Plugin) -> str:
    parts = [f"{k}={v!r}" for k, v in plugin.options.items()]
    return ", ".join(parts)


def compose_plain(overrides: list[str], config_name: str = "config"):
    """The composed config without Hydra's own node, interpolations unresolved."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module

    from attnbench.cli import register_resolvers

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

    from attnbench.cli import register_resolvers

    store_plugins()
    register_resolvers()
    with initialize_config_module(config_module="attnbench.conf", version_base="1.3"):
        cfg = hydra_compose(config_name, overrides=overrides, return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(output_dir)
        cfg.hydra.job.name = "attnbench"
    HydraConfig().set_config(cfg)
    return cfg
