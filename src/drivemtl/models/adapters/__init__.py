"""Feature adapters on named pixel levels (e.g. LV-Adapter's language-to-vision block on P5).

An entry is a factory `f(options, context) -> nn.Module` registered with options derived from
`AdapterOptions`; the module's `forward(features)` replaces `features.pixel` at its level(s) and
declares `modifies = ("pixel",)` (the default the network assumes).
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from drivemtl.config.base import PluginOptions
from drivemtl.registry import Registry

ADAPTERS: Registry[Any] = Registry("adapter")


class AdapterOptions(PluginOptions):
    """Options every adapter has: the pixel level it adapts."""

    level: str = Field("p5", pattern=r"^p[2-7]$", description="pixel level, e.g. p5")


__all__ = ["ADAPTERS", "AdapterOptions"]

# The shipped adapters register themselves on import.
from drivemtl.models.adapters import lv_adapter  # noqa: E402, F401  (lv_adapter)
