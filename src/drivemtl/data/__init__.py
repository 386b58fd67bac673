"""Data layer: readers of real formats, the synthetic world, transforms, samplers, loaders.

Entry points: `build_dataset(cfg, split) -> MultiSetDataset`, `SAMPLERS.get(name)(dataset, ...)`,
`build_loader(dataset, sampler, num_workers) -> DataLoader` yielding `Batch`. Names are imported
lazily so that `drivemtl.data.config` (used by the run-config schema) stays light.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS: dict[str, str] = {
    "DataConfig": "config",
    "ImageSetConfig": "config",
    "LabelSelection": "config",
    "SubsetConfig": "config",
    "TransformConfig": "config",
    "load_data_config": "config",
    "data_config_from_card": "config",
    "ImageSetDataset": "dataset",
    "MultiSetDataset": "dataset",
    "build_dataset": "dataset",
    "DataError": "errors",
    "build_loader": "loader",
    "READERS": "readers",
    "ImageSetReader": "readers",
    "SAMPLERS": "samplers",
    "Compose": "transforms",
    "build_transforms": "transforms",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'drivemtl.data' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"drivemtl.data.{_EXPORTS[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
