"""Typed configuration: YAML files validated by pydantic, `_base_` inheritance, `--set` overrides."""

from drivemtl.config.loader import ConfigError, dump_config, load_config, load_tree, parse_override
from drivemtl.config.schema import BackboneConfig, ModelConfig, NeckConfig, RunConfig, StrictModel

__all__ = [
    "BackboneConfig",
    "ConfigError",
    "ModelConfig",
    "NeckConfig",
    "RunConfig",
    "StrictModel",
    "dump_config",
    "load_config",
    "load_tree",
    "parse_override",
]
