"""Backbones: image -> multi-scale feature maps, looked up by `type` in ``BACKBONES``.

An entry is a factory `f(options) -> nn.Module` registered with its options model; the module
returns C2..C5 (finest first) and exposes `out_channels` and `strides`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from drivemtl.config.base import PluginOptions
from drivemtl.models.backbones.resnet import FrozenBatchNorm2d, ResNet
from drivemtl.registry import Registry

BACKBONES: Registry[Any] = Registry("backbone")


class BackboneOptions(PluginOptions):
    """What every backbone accepts: a local checkpoint in a public format."""

    weights: Path | None = Field(None, description="local checkpoint (.pth/.pt/.safetensors)")


class ResNetOptions(BackboneOptions):
    """ResNet options: stem width, frozen stages, normalisation, a dilated last stage."""

    width: int = Field(64, gt=0, description="channels of the stem; 64 is the standard ResNet")
    frozen_stages: int = Field(-1, ge=-1, le=4, description="-1: none; k: stem and stages 1..k")
    norm: Literal["bn", "frozen_bn", "gn"] = "bn"
    dilation: bool = Field(
        False, description="dilate the last stage instead of striding it (C5 at stride 16)"
    )


def _resnet(depth: int, options: ResNetOptions) -> ResNet:
    return ResNet(
        depth, width=options.width, frozen_stages=options.frozen_stages, norm=options.norm,
        dilation=options.dilation,
    )  # fmt: skip


@BACKBONES.register("resnet18", options=ResNetOptions)
def resnet18(options: ResNetOptions) -> ResNet:
    """ResNet-18 (basic blocks; C2..C5 channels 64/128/256/512 at width 64)."""
    return _resnet(18, options)


@BACKBONES.register("resnet34", options=ResNetOptions)
def resnet34(options: ResNetOptions) -> ResNet:
    """ResNet-34 (basic blocks; C2..C5 channels 64/128/256/512 at width 64)."""
    return _resnet(34, options)


@BACKBONES.register("resnet50", options=ResNetOptions)
def resnet50(options: ResNetOptions) -> ResNet:
    """ResNet-50 (bottlenecks; C2..C5 channels 256/512/1024/2048 at width 64)."""
    return _resnet(50, options)


@BACKBONES.register("resnet101", options=ResNetOptions)
def resnet101(options: ResNetOptions) -> ResNet:
    """ResNet-101 (bottlenecks; C2..C5 channels 256/512/1024/2048 at width 64)."""
    return _resnet(101, options)


__all__ = [
    "BACKBONES",
    "BackboneOptions",
    "FrozenBatchNorm2d",
    "ResNet",
    "ResNetOptions",
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
]
