"""Exchange modules between task decoders' features (e.g. DenseMTL's mTEB / xTAM, PAD-Net).

An entry is a factory `f(options, context) -> nn.Module` registered with options derived from
`ExchangeOptions`; `context.task_channels` gives each decoder's feature width. The module
declares `modifies = ("task:semantic", "task:depth", ...)` and its `forward(features)` updates
`features.tasks` before the predictors run.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from drivemtl.config.base import PluginOptions
from drivemtl.registry import Registry

EXCHANGES: Registry[Any] = Registry("exchange module")


class ExchangeOptions(PluginOptions):
    """Options every exchange module has: the tasks whose features it exchanges."""

    tasks: list[str] = Field(min_length=2, description="tasks whose decoder features mix")


__all__ = ["EXCHANGES", "ExchangeOptions"]

# The shipped exchange modules register themselves on import.
from drivemtl.models.exchanges import padnet, xtam  # noqa: E402, F401  (padnet, padnet3, mteb)
