"""Backbones: image -> multi-scale feature maps, looked up by `type` in ``BACKBONES``.

An entry is a factory `f(options) -> nn.Module` registered with its options model; the module
returns C2..C5 (finest first) and exposes `out_channels` and `strides`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, PositiveInt

from drivemtl.config.base import PluginOptions
from drivemtl.models.backbones.clip_resnet import ModifiedResNet, load_clip_resnet
from drivemtl.models.backbones.convnext import CONVNEXT_SPECS, ConvNeXt, load_convnext_weights
from drivemtl.models.backbones.resnet import FrozenBatchNorm2d, ResNet
from drivemtl.models.backbones.swin import SwinOptions, SwinTransformer, swin_t
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


class CLIPResNetOptions(BackboneOptions):
    """CLIP ModifiedResNet options; with `weights` the architecture comes from the checkpoint.

    `weights` is an OpenAI CLIP file (TorchScript archive or state dict, ``visual.*`` keys used).
    An architecture option left at None takes the checkpoint's value (RN50's without weights);
    one given next to `weights` must agree with the checkpoint.
    """

    layers: tuple[int, int, int, int] | None = Field(
        None, description="blocks per stage; None: the checkpoint's, else (3, 4, 6, 3)"
    )
    width: int | None = Field(
        None, gt=0, multiple_of=2, description="stem width (C5 has 32x); None: checkpoint's or 64"
    )
    output_dim: int | None = Field(
        None, gt=0, description="CLIP embedding size; None: the checkpoint's, else 1024"
    )
    heads: int | None = Field(
        None, gt=0, description="attention-pooling heads; None: width * 32 // 64 (OpenAI's rule)"
    )
    input_resolution: int | None = Field(
        None, gt=0, multiple_of=32, description="pretraining size; None: the checkpoint's or 224"
    )
    frozen_stages: int = Field(-1, ge=-1, le=4, description="-1: none; k: stem and stages 1..k")
    norm: Literal["bn", "frozen_bn"] = "bn"


# RN50, used for the architecture options left at None when no checkpoint is given.
CLIP_RN50_DEFAULTS = {
    "layers": (3, 4, 6, 3),
    "width": 64,
    "output_dim": 1024,
    "input_resolution": 224,
}


@BACKBONES.register("clip_rn50", options=CLIPResNetOptions)
def clip_rn50(options: CLIPResNetOptions) -> ModifiedResNet:
    """CLIP's ResNet image encoder (RN50 by default; C2..C5 channels 256/512/1024/2048)."""
    given = {k: getattr(options, k) for k in CLIP_RN50_DEFAULTS if getattr(options, k) is not None}
    if options.weights is not None:
        return load_clip_resnet(
            options.weights, options.frozen_stages, options.norm, options.heads, expect=given
        )
    arch = {**CLIP_RN50_DEFAULTS, **given}
    heads = options.heads if options.heads is not None else arch["width"] * 32 // 64
    return ModifiedResNet(
        **arch, heads=heads, frozen_stages=options.frozen_stages, norm=options.norm
    )


__all__ = [
    "BACKBONES",
    "BackboneOptions",
    "CLIPResNetOptions",
    "FrozenBatchNorm2d",
    "ModifiedResNet",
    "ResNet",
    "ResNetOptions",
    "clip_rn50",
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
]


# --- ConvNeXt (appended; its import belongs in the import block above) -----------------------


Stages4 = tuple[PositiveInt, PositiveInt, PositiveInt, PositiveInt]


class ConvNeXtOptions(BackboneOptions):
    """ConvNeXt options; `weights` is an official (facebookresearch) or a timm checkpoint.

    `depths` / `dims` left at None take the variant's (-T: 3/3/9/3 blocks, 96..768 channels;
    -B: 3/3/27/3, 128..1024); narrow overrides make tiny test models.
    """

    depths: Stages4 | None = Field(None, description="blocks per stage; None: the variant's")
    dims: Stages4 | None = Field(None, description="channels per stage; None: the variant's")
    drop_path: float = Field(
        0.0, ge=0.0, lt=1.0, description="stochastic depth of the last block (0 at the first)"
    )
    layer_scale_init: float = Field(
        1e-6, ge=0.0, description="initial layer scale gamma; 0: no layer scale"
    )
    frozen_stages: int = Field(-1, ge=-1, le=4, description="-1: none; k: stem and stages 1..k")


def _convnext(variant: str, options: ConvNeXtOptions) -> ConvNeXt:
    depths, dims = CONVNEXT_SPECS[variant]
    module = ConvNeXt(
        options.depths or depths, options.dims or dims, drop_path=options.drop_path,
        layer_scale_init=options.layer_scale_init, frozen_stages=options.frozen_stages,
    )  # fmt: skip
    if options.weights is not None:
        load_convnext_weights(module, options.weights)
    return module


@BACKBONES.register("convnext_t", options=ConvNeXtOptions)
def convnext_t(options: ConvNeXtOptions) -> ConvNeXt:
    """ConvNeXt-T (C2..C5 channels 96/192/384/768, each through an output LayerNorm)."""
    return _convnext("tiny", options)


@BACKBONES.register("convnext_b", options=ConvNeXtOptions)
def convnext_b(options: ConvNeXtOptions) -> ConvNeXt:
    """ConvNeXt-B (C2..C5 channels 128/256/512/1024, each through an output LayerNorm)."""
    return _convnext("base", options)


__all__ += ["ConvNeXt", "ConvNeXtOptions", "convnext_b", "convnext_t"]


BACKBONES.add("swin_t", swin_t, options=SwinOptions)
__all__ += ["SwinOptions", "SwinTransformer", "swin_t"]
