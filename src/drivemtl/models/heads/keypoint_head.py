"""Keypoint head (Mask R-CNN style, Gaussian-heatmap targets as in VTDNet / SimpleBaseline).

14x14 RoI features -> 8 conv3x3 + ReLU -> 4x4 stride-2 deconv -> 2x bilinear = 56x56 heatmaps per
joint. Targets are Gaussians at the joints (MSE loss); decoding takes each map's arg-max.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from drivemtl.models.features import OBJECTS, PIXEL, Features, FeatureSpec
from drivemtl.models.heads.mask_head import (
    RoIHeadOutputs,
    conv_stack,
    pool_with_vectors,
    select_roi_set,
    vector_input,
)
from drivemtl.ops.heatmaps import gaussian_heatmaps, heatmap_argmax
from drivemtl.ops.roi_align import MultiScaleRoIAlign
from drivemtl.structures.batch import Batch


class KeypointHead(nn.Module):
    """Per-joint heatmaps for RoIs of the person classes (see module docstring)."""

    needs = (PIXEL, OBJECTS)

    def __init__(
        self,
        spec: FeatureSpec,
        num_keypoints: int,
        person_classes: tuple[int, ...] = (0,),
        channels: int = 512,
        num_convs: int = 8,
        resolution: int = 14,
        strides: tuple[int, ...] = (4, 8, 16, 32),
        task: str | None = None,
    ) -> None:
        super().__init__()
        self.task = task
        self.num_keypoints = num_keypoints
        self.person_classes = tuple(person_classes)
        self.strides = tuple(strides)
        self.heatmap_size = 4 * resolution
        self.pooler = MultiScaleRoIAlign(resolution, sampling_ratio=2)
        self.convs = conv_stack(spec.pixel_channels, channels, num_convs)
        in_channels = channels if num_convs else spec.pixel_channels
        self.deconv = nn.ConvTranspose2d(in_channels, num_keypoints, 4, stride=2, padding=1)
        for m in self.modules():
            if isinstance(m, nn.Conv2d | nn.ConvTranspose2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
        self.vector_input = vector_input(spec, task)

    def is_person(self, classes: Tensor) -> Tensor:
        """[R] bool: which classes are person classes."""
        keep = torch.zeros_like(classes, dtype=torch.bool)
        for c in self.person_classes:
            keep |= classes == c
        return keep

    def forward(self, features: Features, batch: Batch | None = None) -> RoIHeadOutputs:
        """Heatmaps [R, K, 56, 56] for positive person RoIs (training) or person detections."""

        def has_keypoints(i: int) -> bool:
            inst = batch.instances[i] if batch is not None else None
            return inst is not None and inst.keypoints is not None

        chosen = select_roi_set(features.objects, batch, self.keep_class, has_keypoints)
        x = pool_with_vectors(self, features, chosen)
        return RoIHeadOutputs(
            self.logits(x), chosen.boxes, chosen.classes, chosen.gt_index, chosen.scores
        )

    def keep_class(self, classes: Tensor) -> Tensor:
        """[R] bool: the detections this head predicts joints for (person classes)."""
        return self.is_person(classes)

    def logits(self, pooled: Tensor) -> Tensor:
        """Heatmaps of RoI features pooled to [R, C, r, r] (the exported part)."""
        x = self.deconv(self.convs(pooled))
        return F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)


def keypoint_targets(
    keypoints: Tensor, boxes: Tensor, size: int, sigma: float
) -> tuple[Tensor, Tensor]:
    """Gaussian heatmaps [R, K, size, size] of image-pixel `keypoints` [R, K, 3] inside `boxes`.

    Returns (targets, valid [R, K]); a joint is valid when labelled (v > 0) and inside its box.
    """
    x1, y1, x2, y2 = boxes.unbind(-1)
    w = (x2 - x1).clamp(min=1e-6)[:, None]
    h = (y2 - y1).clamp(min=1e-6)[:, None]
    hx = (keypoints[..., 0] - x1[:, None]) / w * size - 0.5
    hy = (keypoints[..., 1] - y1[:, None]) / h * size - 0.5
    inside = (hx >= -0.5) & (hx <= size - 0.5) & (hy >= -0.5) & (hy <= size - 0.5)
    valid = (keypoints[..., 2] > 0) & inside
    targets = gaussian_heatmaps(torch.stack((hx, hy), dim=-1), (size, size), sigma, valid)
    return targets, valid


def decode_keypoints(heatmaps: Tensor, boxes: Tensor) -> Tensor:
    """[R, K, S, S] heatmaps of `boxes` [R, 4] -> keypoints [R, K, 3] (x, y, score) in pixels."""
    points, scores = heatmap_argmax(heatmaps)
    size_y, size_x = heatmaps.shape[-2:]
    x1, y1, x2, y2 = boxes.unbind(-1)
    x = x1[:, None] + (points[..., 0] + 0.5) * ((x2 - x1) / size_x)[:, None]
    y = y1[:, None] + (points[..., 1] + 0.5) * ((y2 - y1) / size_y)[:, None]
    return torch.stack((x, y, scores), dim=-1)
