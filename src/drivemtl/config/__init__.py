"""Typed configuration machinery: YAML files validated by pydantic, `_base_` inheritance, `--set`.

This package knows no layer: each layer defines its own section (`drivemtl.models.config`,
`drivemtl.data.config`, `drivemtl.engine.config`) and the whole run config is composed in
`drivemtl.engine.run_config`.
"""

from drivemtl.config.base import PluginOptions, StrictModel, plugin, plugin_default
from drivemtl.config.loader import ConfigError, dump_config, load_config, load_tree, parse_override

__all__ = [
    "ConfigError",
    "PluginOptions",
    "StrictModel",
    "dump_config",
    "load_config",
    "load_tree",
    "parse_override",
    "plugin",
    "plugin_default",
]
