"""Interaction blocks over group features and the object stream (e.g. VTDNet's Intra / Cross-IB).

An entry is a factory `f(options, context) -> nn.Module` registered with options derived from
`InteractionOptions`; the module declares the streams it `needs` / `modifies` (for example
`("group:segmentation", "objects")`) and its `forward(features)` updates them in place.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from drivemtl.config.base import PluginOptions
from drivemtl.registry import Registry

INTERACTIONS: Registry[Any] = Registry("interaction block")


class InteractionOptions(PluginOptions):
    """Options every interaction block has: the task groups it mixes."""

    groups: list[str] = Field(min_length=1, description="task groups, e.g. [segmentation]")


__all__ = ["INTERACTIONS", "InteractionOptions"]

# The shipped interaction blocks register themselves on import.
from drivemtl.models.interactions import vtd  # noqa: E402, F401  (vtd_intra, vtd_cross)
