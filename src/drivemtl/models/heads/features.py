"""The VTDNet feature hierarchy shared by every head: image (C5), pixel (P2..P6), instance (RoIs).

Heads read what they need from one `Features` object; later modules (interaction blocks, adapters)
transform it in place of the plain FPN output without any head noticing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import Tensor


@dataclass
class InstanceFeatures:
    """Region proposals and the RoIs sampled from them; filled by the detection (RPN + box) head.

    proposals: per image [Ki, 4] boxes in padded-input pixels (detached). During training,
    `rois` are the sampled RoIs per image, `roi_labels` their class (num_classes = background),
    `roi_gt_index` the index of the matched ground-truth instance (-1 for background).
    At inference `detections` are the final boxes per image ([Ni, 4]) with `det_classes` and
    `det_scores`, which the mask and keypoint heads refine.
    """

    proposals: list[Tensor]
    rois: list[Tensor] | None = None
    roi_labels: list[Tensor] | None = None
    roi_gt_index: list[Tensor] | None = None
    detections: list[Tensor] | None = None
    det_classes: list[Tensor] | None = None
    det_scores: list[Tensor] | None = None


@dataclass
class Features:
    """Shared features of one batch of images.

    image: C5 [B, C, H/32, W/32] (image-level features for classification); pixel: FPN maps
    P2..P6 (finest first) with their `strides`; backbone: C2..C5; input_size: padded (H, W) of the
    batch; image_sizes: each image's (h, w) inside the padding; instance: RoI-level features, set
    once the detection head has run.
    """

    image: Tensor
    pixel: list[Tensor]
    strides: tuple[int, ...]
    input_size: tuple[int, int]
    image_sizes: list[tuple[int, int]]
    backbone: list[Tensor] = field(default_factory=list)
    instance: InstanceFeatures | None = None

    def levels(self, strides: tuple[int, ...]) -> list[Tensor]:
        """The pixel feature maps with the given strides (e.g. (4, 8, 16, 32) for P2..P5)."""
        missing = [s for s in strides if s not in self.strides]
        if missing:
            raise ValueError(f"no pixel features with stride {missing}; have {self.strides}")
        return [self.pixel[self.strides.index(s)] for s in strides]


@dataclass(frozen=True)
class FeatureSpec:
    """Channel counts and strides of the features a head will receive (to size its layers)."""

    image_channels: int
    pixel_channels: int
    strides: tuple[int, ...]
