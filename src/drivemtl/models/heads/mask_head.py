"""Mask R-CNN mask head: 14x14 RoI features -> 4 convs -> 2x deconv -> class-specific 28x28 masks.

Trained on the positive RoIs sampled by the detection head; at inference it runs on the final
detections. `paste_masks` puts the low-resolution masks back into an image.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from drivemtl.models.features import OBJECTS, PIXEL, Features, FeatureSpec, ObjectFeatures
from drivemtl.ops.roi_align import MultiScaleRoIAlign
from drivemtl.structures.batch import Batch


@dataclass
class RoIHeadOutputs:
    """Per-RoI outputs of a mask or keypoint head and the RoIs they belong to.

    logits: [R, ...] for all images concatenated; boxes / classes (and, in training, the matched
    ground-truth index, or at inference the detection scores) per image, in padded-input pixels.
    """

    logits: Tensor
    boxes: list[Tensor]
    classes: list[Tensor]
    gt_index: list[Tensor] | None = None
    scores: list[Tensor] | None = None

    def per_image(self) -> tuple[Tensor, ...]:
        """`logits` split into each image's rows (one per box of that image)."""
        return torch.split(self.logits, [b.shape[0] for b in self.boxes])


def select_rois(
    objects: ObjectFeatures | None,
    batch: Batch | None,
    keep_class: Callable[[Tensor], Tensor],
    keep_image: Callable[[int], bool],
) -> tuple[list[Tensor], list[Tensor], list[Tensor] | None, list[Tensor] | None]:
    """RoIs a second-stage head works on: positive sampled RoIs (training) or detections.

    `keep_class` filters by class; `keep_image(i)` says whether image i has the needed labels.
    """
    if objects is None:
        raise RuntimeError(
            "a mask / keypoint head needs the object stream, which no stage provided"
        )
    boxes, classes, extra = [], [], []
    if batch is not None:
        if objects.rois is None or objects.roi_labels is None or objects.roi_gt_index is None:
            raise RuntimeError("training a RoI head needs sampled RoIs from the detection head")
        for i, (rois, labels, gt) in enumerate(
            zip(objects.rois, objects.roi_labels, objects.roi_gt_index, strict=True)
        ):
            keep = (gt >= 0) & keep_class(labels)
            if not keep_image(i):
                keep = torch.zeros_like(keep)
            boxes.append(rois[keep])
            classes.append(labels[keep])
            extra.append(gt[keep])
        return boxes, classes, extra, None
    if objects.detections is None or objects.det_classes is None or objects.det_scores is None:
        raise RuntimeError("inference with a RoI head needs the detection head's detections")
    for det, cls, score in zip(
        objects.detections, objects.det_classes, objects.det_scores, strict=True
    ):
        keep = keep_class(cls)
        boxes.append(det[keep])
        classes.append(cls[keep])
        extra.append(score[keep])
    return boxes, classes, None, extra


def conv_stack(in_channels: int, channels: int, num_convs: int) -> nn.Sequential:
    """`num_convs` x (3x3 conv + ReLU), the RoI feature tower of the mask and keypoint heads."""
    layers: list[nn.Module] = []
    for i in range(num_convs):
        layers += [nn.Conv2d(in_channels if i == 0 else channels, channels, 3, padding=1),
                   nn.ReLU(inplace=True)]  # fmt: skip
    return nn.Sequential(*layers)


class MaskHead(nn.Module):
    """Mask R-CNN mask branch with one 28x28 mask per class (see module docstring)."""

    needs = (PIXEL, OBJECTS)

    def __init__(
        self,
        spec: FeatureSpec,
        num_classes: int,
        channels: int = 256,
        num_convs: int = 4,
        resolution: int = 14,
        strides: tuple[int, ...] = (4, 8, 16, 32),
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.strides = tuple(strides)
        self.pooler = MultiScaleRoIAlign(resolution, sampling_ratio=2)
        self.convs = conv_stack(spec.pixel_channels, channels, num_convs)
        self.deconv = nn.ConvTranspose2d(
            channels if num_convs else spec.pixel_channels, channels, 2, 2
        )
        self.predictor = nn.Conv2d(channels, num_classes, 1)
        for m in self.modules():
            if isinstance(m, nn.Conv2d | nn.ConvTranspose2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
        nn.init.normal_(self.predictor.weight, std=0.001)

    def forward(self, features: Features, batch: Batch | None = None) -> RoIHeadOutputs:
        """Mask logits [R, num_classes, 2r, 2r] for the positive RoIs / the detections."""

        def has_masks(i: int) -> bool:
            inst = batch.instances[i] if batch is not None else None
            return inst is not None and inst.masks is not None

        boxes, classes, gt_index, scores = select_rois(
            features.objects, batch, self.keep_class, has_masks
        )
        x = self.pooler(features.levels(self.strides), self.strides, boxes)
        return RoIHeadOutputs(self.logits(x), boxes, classes, gt_index, scores)

    def keep_class(self, classes: Tensor) -> Tensor:
        """[R] bool: the detections this head makes masks for (its classes)."""
        return classes < self.num_classes

    def logits(self, pooled: Tensor) -> Tensor:
        """Mask logits of RoI features pooled to [R, C, r, r] (the exported part)."""
        return self.predictor(F.relu(self.deconv(self.convs(pooled))))


def paste_masks(probs: Tensor, boxes: Tensor, size: tuple[int, int]) -> Tensor:
    """Resample [N, M, M] mask probabilities into their boxes of an image: [N, H, W] float.

    Each pixel centre inside a box is mapped to the mask grid (bilinear, the mask spanning the
    box edges); pixels outside the box get 0.
    """
    height, width = size
    out = probs.new_zeros((probs.shape[0], height, width))
    for n in range(probs.shape[0]):
        x1, y1, x2, y2 = (float(v) for v in boxes[n])
        if x2 - x1 <= 0 or y2 - y1 <= 0:
            continue
        c0, c1 = max(int(x1), 0), min(int(torch.tensor(x2).ceil()), width)
        r0, r1 = max(int(y1), 0), min(int(torch.tensor(y2).ceil()), height)
        if c1 <= c0 or r1 <= r0:
            continue
        xs = (torch.arange(c0, c1, dtype=probs.dtype, device=probs.device) + 0.5 - x1) / (x2 - x1)
        ys = (torch.arange(r0, r1, dtype=probs.dtype, device=probs.device) + 0.5 - y1) / (y2 - y1)
        gy, gx = torch.meshgrid(ys * 2 - 1, xs * 2 - 1, indexing="ij")
        grid = torch.stack((gx, gy), dim=-1)[None]
        sampled = F.grid_sample(
            probs[n][None, None], grid, mode="bilinear", padding_mode="zeros", align_corners=False
        )
        out[n, r0:r1, c0:c1] = sampled[0, 0]
    return out
