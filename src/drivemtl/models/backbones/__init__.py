"""Backbones: image -> multi-scale feature maps, looked up by name in ``BACKBONES``."""

from __future__ import annotations

from typing import Any

from drivemtl.models.backbones.resnet import FrozenBatchNorm2d, ResNet
from drivemtl.registry import Registry

BACKBONES: Registry[Any] = Registry("backbone")


@BACKBONES.register("resnet18")
def resnet18(**kwargs: Any) -> ResNet:
    """ResNet-18 (basic blocks; C2..C5 channels 64/128/256/512 at width 64)."""
    return ResNet(18, **kwargs)


@BACKBONES.register("resnet34")
def resnet34(**kwargs: Any) -> ResNet:
    """ResNet-34 (basic blocks; C2..C5 channels 64/128/256/512 at width 64)."""
    return ResNet(34, **kwargs)


@BACKBONES.register("resnet50")
def resnet50(**kwargs: Any) -> ResNet:
    """ResNet-50 (bottlenecks; C2..C5 channels 256/512/1024/2048 at width 64)."""
    return ResNet(50, **kwargs)


@BACKBONES.register("resnet101")
def resnet101(**kwargs: Any) -> ResNet:
    """ResNet-101 (bottlenecks; C2..C5 channels 256/512/1024/2048 at width 64)."""
    return ResNet(101, **kwargs)


__all__ = [
    "BACKBONES",
    "FrozenBatchNorm2d",
    "ResNet",
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
]
