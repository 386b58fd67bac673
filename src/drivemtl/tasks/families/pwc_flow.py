"""The `pwc_flow` head family: a PWC-style flow decoder trained without flow labels (UFlow /
VTDNet's unsupervised criterion).

Per direction (key -> reference, and reference -> key when `bidirectional`), at the finest level:
- census loss (`census_weight`) of the first image against the second warped by the flow,
  upsampled to the input size, weighted by the non-occlusion estimate (`occlusion`: the range
  map of the opposite flow, min(range, 1); forward-backward consistency; or none) times the
  valid-warp map (the second frame's image area warped by the flow) and the first frame's
  image area less the census radius (padding excluded; the second image is zero outside its
  area, as beyond its borders); the masks carry no gradient;
- edge-aware second-order smoothness (`smooth_weight`, edge constant `edge_constant`) of the
  flow upsampled to stride `smoothness_stride` against the image average-pooled to it.
`level_weights` adds the same criterion at coarser levels (pyramid losses, as in the
unsupervised PWC variants before UFlow): each level's flow against the frames area-downsampled
to that level, where a displacement of several input pixels is within the census loss's narrow
basin; the finest level keeps its input-resolution term, weighted by the last entry.
Images enter in [0, 1]: the batch's normalisation (x - mean) / std over 0..255 is undone with
`image_mean` / `image_std`, which must match `data.transforms` (`normalized: false` when the
data is not normalised). Only the samples the task is labelled for (a reference frame that is
another frame) count; none: an exact zero.
"""

from __future__ import annotations

from typing import Literal

import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import Tensor, nn

from drivemtl.models.features import PIXEL, REFERENCE, FeatureSpec
from drivemtl.models.heads.pwc_flow import FlowOutputs, PWCFlowHead, upsample_flow
from drivemtl.ops.photometric import census_loss, fb_consistency_mask, range_map, smoothness_2nd
from drivemtl.ops.warp import warp_by_flow
from drivemtl.structures.batch import Batch
from drivemtl.tasks.base import zero_loss
from drivemtl.tasks.families.base import HEAD_FAMILIES, HeadFamily, HeadOptions

Occlusion = Literal["range_map", "fb_consistency", "none"]
# The defaults of data.transforms (TransformConfig.mean / std; tasks do not import data).
IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)


class PWCFlowOptions(HeadOptions):
    """Decoder widths and the unsupervised criterion's weights (UFlow / VTDNet defaults)."""

    type: str = "pwc_flow"
    strides: list[int] = Field(default_factory=lambda: [32, 16, 8, 4], min_length=1,
                               description="pixel-feature strides, coarse to fine")  # fmt: skip
    max_displacement: int = Field(4, ge=0, description="cost volume radius (81 channels at 4)")
    decoder_widths: list[int] = Field(default_factory=lambda: [128, 128, 96, 64, 32],
                                      min_length=1)  # fmt: skip
    context_widths: list[int] = Field(default_factory=lambda: [128, 128, 128, 96, 64, 32])
    context_dilations: list[int] = Field(default_factory=lambda: [1, 2, 4, 8, 16, 1])
    census_weight: float = Field(1.0, ge=0.0)
    census_radius: int = Field(3, ge=1, description="7x7 census patches at 3")
    smooth_weight: float = Field(4.0, ge=0.0, description="edge-aware second-order smoothness")
    edge_constant: float = Field(150.0, ge=0.0)
    smoothness_stride: int = Field(2, ge=1, description="resolution of the smoothness term")
    occlusion: Occlusion = "range_map"
    bidirectional: bool = Field(True, description="also the loss of the backward flow")
    normalized: bool = Field(True, description="batch images are (x - mean) / std of 0..255")
    image_mean: tuple[float, float, float] = IMAGENET_MEAN
    image_std: tuple[float, float, float] = IMAGENET_STD
    level_weights: list[float] | None = Field(
        None, description="criterion weight per level, coarse to fine (None: the finest only)"
    )

    @model_validator(mode="after")
    def _one_weight_per_level(self) -> PWCFlowOptions:
        if self.level_weights is not None and (
            len(self.level_weights) != len(self.strides) or min(self.level_weights) < 0
        ):
            raise ValueError(f"level_weights {self.level_weights} must give one weight >= 0 per "
                             f"stride {self.strides}")  # fmt: skip
        return self


def image_area(batch: Batch) -> Tensor:
    """[B, 1, H, W] 1 inside each image, 0 on the padding."""
    area = batch.images.new_zeros((len(batch), 1, *batch.images.shape[-2:]))
    for i, (h, w) in enumerate(batch.image_sizes):
        area[i, :, :h, :w] = 1.0
    return area


def downsample(images: Tensor, area: Tensor, size: tuple[int, int]) -> tuple[Tensor, Tensor]:
    """Images [B, 3, H, W] area-averaged to `size`, and the cells wholly inside the image area."""
    pooled_area = F.adaptive_avg_pool2d(area, size)
    return F.adaptive_avg_pool2d(images, size), (pooled_area > 0.999).to(area.dtype)


def erode(area: Tensor, radius: int) -> Tensor:
    """`area` [B, 1, H, W] less the pixels within `radius` of its outside (whose census patch
    would see the padding)."""
    size = 2 * radius + 1
    return -F.max_pool2d(-area, size, stride=1, padding=radius)


@HEAD_FAMILIES.register("pwc_flow")
class PWCFlowFamily(HeadFamily):
    """PWC-style flow with the unsupervised census + smoothness criterion (module docstring)."""

    Options = PWCFlowOptions
    kinds = ("flow",)
    needs = (PIXEL, REFERENCE)

    def build(self, spec: FeatureSpec) -> nn.Module:
        """The decoder of the configured levels and widths."""
        o = self.options
        return PWCFlowHead(spec, o.strides, o.max_displacement, o.decoder_widths,
                           o.context_widths, o.context_dilations)  # fmt: skip

    def unit_images(self, images: Tensor) -> Tensor:
        """Batch images back in [0, 1] RGB."""
        if not self.options.normalized:
            return images / 255.0
        mean = images.new_tensor(self.options.image_mean).view(1, 3, 1, 1)
        std = images.new_tensor(self.options.image_std).view(1, 3, 1, 1)
        return (images * std + mean) / 255.0

    def direction_loss(
        self, image1: Tensor, image2: Tensor, area1: Tensor, area2: Tensor,
        flow: Tensor, opposite: Tensor, smoothness_stride: int | None = None,
    ) -> Tensor:  # fmt: skip
        """Census + smoothness of `flow` (frame 1 -> 2, at any stride) given the opposite flow, at
        the images' resolution (smoothness at `smoothness_stride` of it, default the option)."""
        o = self.options
        size = tuple(image1.shape[-2:])
        full, back = upsample_flow(flow, size), upsample_flow(opposite, size).detach()
        warped = warp_by_flow(image2 * area2, full)
        mask = erode(area1, o.census_radius) * warp_by_flow(area2, full.detach())
        if o.occlusion == "range_map":
            mask = mask * range_map(back).clamp(max=1.0)
        elif o.occlusion == "fb_consistency":
            mask = mask * fb_consistency_mask(full.detach(), warp_by_flow(back, full.detach()))
        loss = o.census_weight * census_loss(image1, warped, mask.detach(), o.census_radius)
        if o.smooth_weight > 0:
            s = o.smoothness_stride if smoothness_stride is None else smoothness_stride
            small = (size[0] // s, size[1] // s)
            image = F.adaptive_avg_pool2d(image1, small) if s > 1 else image1
            loss = loss + o.smooth_weight * smoothness_2nd(
                upsample_flow(flow, small), image, o.edge_constant
            )
        return loss

    def loss(self, outputs: FlowOutputs, batch: Batch) -> Tensor:
        """The criterion over the samples labelled for the task; an exact zero when none is."""
        mask = self.task.labeled(batch)
        if not bool(mask.any()):
            return zero_loss(batch.images.device)
        reference = batch.reference
        if reference is None or outputs.forward is None or outputs.backward is None:
            raise ValueError(
                f"task {self.task.name!r} trains on clips: set data.sets.<set>.clip for frames "
                f"{[m.name for m in batch.metas][:3]}"
            )
        rows = mask.nonzero().flatten()
        key = self.unit_images(batch.images)[rows]
        ref = self.unit_images(reference.images)[rows]
        key_area, ref_area = image_area(batch)[rows], image_area(reference)[rows]
        weights = self.options.level_weights or [0.0] * (len(outputs.forward) - 1) + [1.0]
        loss = zero_loss(batch.images.device)
        for level, weight in enumerate(weights):
            if weight == 0:
                continue
            frames = (key, ref, key_area, ref_area)
            smoothness_stride = None
            if level < len(weights) - 1:  # a coarser level: at its own resolution
                size = tuple(outputs.forward[level].shape[-2:])
                key_l, key_area_l = downsample(key, key_area, size)
                ref_l, ref_area_l = downsample(ref, ref_area, size)
                frames, smoothness_stride = (key_l, ref_l, key_area_l, ref_area_l), 1
            forward, backward = outputs.forward[level][rows], outputs.backward[level][rows]
            loss = loss + weight * self.pair_loss(frames, forward, backward, smoothness_stride)
        return loss

    def pair_loss(self, frames: tuple[Tensor, Tensor, Tensor, Tensor], forward: Tensor,
                  backward: Tensor, smoothness_stride: int | None) -> Tensor:  # fmt: skip
        """The forward direction's criterion (and the mean with the backward's when
        `bidirectional`) of (key, reference, key area, reference area)."""
        key, ref, key_area, ref_area = frames
        loss = self.direction_loss(key, ref, key_area, ref_area, forward, backward,
                                   smoothness_stride)  # fmt: skip
        if self.options.bidirectional:
            loss = loss + self.direction_loss(ref, key, ref_area, key_area, backward, forward,
                                              smoothness_stride)  # fmt: skip
            loss = loss / 2
        return loss
