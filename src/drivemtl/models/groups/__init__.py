"""Group encoders: one shared feature per task group (`model.groups.<group>: {type: ...}`).

An entry is a factory `f(options, context) -> nn.Module` (`context.name` is the group) whose
`forward(features)` returns the group's map; the module exposes `out_channels` and declares
`needs`. The network stores the result as `features.groups[group]` (stream `group:<group>`),
and the decoders of that group's tasks read it instead of aggregating the pixel levels each.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field
from torch import Tensor

from drivemtl.config.base import PluginOptions
from drivemtl.models.features import PIXEL, Features
from drivemtl.models.heads.dense_decoder import aggregate_levels, aggregation_scales
from drivemtl.models.stage import FeatureStage, StageContext
from drivemtl.registry import Registry

GROUP_ENCODERS: Registry[Any] = Registry("group encoder")


class FPNAggregationOptions(PluginOptions):
    """The Semantic-FPN aggregation shared by a group: width and the levels it sums."""

    channels: int = Field(128, gt=0)
    strides: tuple[int, ...] = (4, 8, 16, 32)


class FPNAggregation(FeatureStage):
    """Every pixel level brought to the finest stride by conv + GN + ReLU + 2x upsampling, summed.

    VTDNet's segmentation group shares this P2..P5 aggregation among its decoders.
    """

    needs = (PIXEL,)

    def __init__(self, in_channels: int, channels: int, strides: tuple[int, ...]) -> None:
        super().__init__()
        self.strides = tuple(strides)
        self.out_channels = channels
        self.scales = aggregation_scales(in_channels, channels, self.strides)

    def forward(self, features: Features) -> Tensor:
        """[B, channels, H/s, W/s] at the finest stride s of `strides`."""
        return aggregate_levels(self.scales, features.levels(self.strides))


@GROUP_ENCODERS.register("semantic_fpn", options=FPNAggregationOptions)
def semantic_fpn(options: FPNAggregationOptions, context: StageContext) -> FPNAggregation:
    """The shared Semantic-FPN aggregation of a group's pixel features."""
    missing = [s for s in options.strides if s not in context.spec.strides]
    if missing:
        raise ValueError(
            f"model.groups.{context.name}: strides {missing} are not among the pixel features "
            f"{context.spec.strides}"
        )
    return FPNAggregation(context.spec.pixel_channels, options.channels, options.strides)


__all__ = ["GROUP_ENCODERS", "FPNAggregation", "FPNAggregationOptions"]
