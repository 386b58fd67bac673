"""Necks: multi-scale backbone features -> fused pyramid, looked up by `type` in ``NECKS``.

An entry is a factory `f(options, in_channels) -> nn.Module` registered with its options model;
the module returns the pyramid (finest first) and exposes `out_channels` and `strides`.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from drivemtl.config.base import PluginOptions
from drivemtl.models.necks.fpn import FPN
from drivemtl.registry import Registry

NECKS: Registry[Any] = Registry("neck")


class FPNOptions(PluginOptions):
    """Feature pyramid options: common width, GroupNorm or none, the extra P6 level."""

    out_channels: int = Field(256, gt=0)
    norm: Literal["gn", "none"] = "none"
    extra_p6: bool = True


@NECKS.register("fpn", options=FPNOptions)
def fpn(options: FPNOptions, in_channels: list[int]) -> FPN:
    """FPN over every backbone level (C2..C5 -> P2..P6)."""
    return FPN(
        in_channels,
        out_channels=options.out_channels,
        norm=None if options.norm == "none" else options.norm,
        extra_p6=options.extra_p6,
    )


__all__ = ["FPN", "NECKS", "FPNOptions"]
