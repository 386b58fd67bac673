"""Necks: multi-scale backbone features -> fused pyramid, looked up by name in ``NECKS``."""

from __future__ import annotations

from typing import Any

from drivemtl.models.necks.fpn import FPN
from drivemtl.registry import Registry

NECKS: Registry[Any] = Registry("neck")
NECKS.add("fpn", FPN)

__all__ = ["FPN", "NECKS"]
