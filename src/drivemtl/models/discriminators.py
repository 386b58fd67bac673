"""Domain discriminators for output-level adversarial domain adaptation (AdvEnt, DenseMTL UDA).

A discriminator sees a task's output map (an entropy map, normalised depth, normals: what the
task's `domain_map` returns) and scores, per patch, whether it comes from the source domain.
An entry of ``DISCRIMINATORS`` is a factory `f(options, in_channels) -> nn.Module` whose module
maps [B, C, h, w] to patch logits [B, 1, h', w'].
"""

from __future__ import annotations

from typing import Any

from pydantic import Field
from torch import Tensor, nn

from drivemtl.config.base import PluginOptions
from drivemtl.registry import Registry

DISCRIMINATORS: Registry[Any] = Registry("discriminator")


class PatchDiscriminatorOptions(PluginOptions):
    """AdvEnt's fully convolutional discriminator: `layers` 4x4 stride-2 convolutions doubling
    from `channels`, LeakyReLU 0.2, and a 4x4 stride-2 convolution to one logit per patch."""

    channels: int = Field(64, gt=0, description="width of the first layer (doubled per layer)")
    layers: int = Field(4, ge=1, le=8, description="hidden layers before the logit layer")
    negative_slope: float = Field(0.2, ge=0.0)


class PatchDiscriminator(nn.Module):
    """Patch logits of 'source domain' for an output map; stride 2^(layers + 1)."""

    def __init__(self, in_channels: int, options: PatchDiscriminatorOptions) -> None:
        super().__init__()
        blocks: list[nn.Module] = []
        width_in = in_channels
        for k in range(options.layers):
            width = options.channels * 2**k
            blocks += [
                nn.Conv2d(width_in, width, 4, stride=2, padding=1),
                nn.LeakyReLU(options.negative_slope, inplace=True),
            ]
            width_in = width
        blocks.append(nn.Conv2d(width_in, 1, 4, stride=2, padding=1))
        self.net = nn.Sequential(*blocks)

    def forward(self, maps: Tensor) -> Tensor:
        """[B, C, h, w] -> [B, 1, h', w'] logits (a map smaller than one patch is padded)."""
        return self.net(maps)


@DISCRIMINATORS.register("patch", options=PatchDiscriminatorOptions)
def patch(options: PatchDiscriminatorOptions, in_channels: int) -> nn.Module:
    """The AdvEnt patch discriminator over `in_channels` input maps."""
    return PatchDiscriminator(in_channels, options)
