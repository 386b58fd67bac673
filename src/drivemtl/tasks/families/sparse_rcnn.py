"""The Sparse R-CNN family (Sun et al. 2021): set prediction of boxes, no anchors and no NMS.

Criterion, per stage (deep supervision) and per labelled image: Hungarian matching of the
queries to the ground truth (class focal cost + L1 of size-normalised boxes + -GIoU, weights
`class_cost`, `l1_cost`, `giou_cost`), then a sigmoid focal loss over every query and class
(one-hot target at the matched class, all-zero for unmatched queries), the L1 of the matched
boxes normalised by the image size and 1 - GIoU, each summed and divided by the number of target
boxes in the labelled images. Stage losses are summed.

Ignore regions (crowd boxes, and classes the detector does not predict, see
`models.heads.detector.ground_truth`) are dropped from the targets: they are matched to no
query, and queries on them count as background. Images not labelled for the task add nothing.
"""

from __future__ import annotations

import torch
from pydantic import Field
from torch import Tensor, nn

from drivemtl.models.features import OBJECTS, FeatureSpec
from drivemtl.models.heads.sparse_rcnn import (
    SetTargets,
    SparseRCNN,
    SparseRCNNConfig,
    SparseRCNNOutputs,
    image_scale,
    match,
    set_targets,
)
from drivemtl.ops.boxes import generalized_box_iou
from drivemtl.ops.set_losses import sigmoid_focal_loss
from drivemtl.structures.batch import Batch
from drivemtl.tasks.base import zero_loss
from drivemtl.tasks.families.base import HEAD_FAMILIES, HeadFamily, HeadOptions


class SparseRCNNOptions(HeadOptions, SparseRCNNConfig):
    """Head hyper-parameters and matching costs (`SparseRCNNConfig`) plus the loss weights."""

    type: str = "sparse_rcnn"
    class_weight: float = Field(2.0, ge=0.0)
    l1_weight: float = Field(5.0, ge=0.0)
    giou_weight: float = Field(2.0, ge=0.0)
    deep_supervision: bool = Field(True, description="a loss on every stage, not only the last")

    def head_config(self) -> SparseRCNNConfig:
        """The options the head module reads."""
        return SparseRCNNConfig.model_validate(
            self.model_dump(include=set(SparseRCNNConfig.model_fields))
        )


def stage_terms(
    logits: Tensor,
    boxes: Tensor,
    targets: list[SetTargets | None],
    image_sizes: list[tuple[int, int]],
    images: list[int],
    options: SparseRCNNOptions,
) -> tuple[Tensor, Tensor, Tensor]:
    """Unnormalised sums (focal, L1, 1 - GIoU) of one stage over the images `images`.

    logits [B, Q, C] and boxes [B, Q, 4] in input pixels; each image is matched on its own.
    """
    zero = logits.sum() * 0.0
    focal, l1, giou = zero, zero, zero
    for i in images:
        rows, cols = match(logits[i], boxes[i], targets[i], image_sizes[i], options)
        onehot = torch.zeros_like(logits[i], dtype=torch.float32)
        target = targets[i]
        if target is not None and len(rows):
            onehot[rows, target.classes[cols].long()] = 1.0
            scale = image_scale(image_sizes[i], boxes)
            pred, gt = boxes[i][rows].float(), target.boxes[cols].float()
            l1 = l1 + ((pred - gt) / scale).abs().sum()
            giou = giou + (1.0 - torch.diagonal(generalized_box_iou(pred, gt))).sum()
        focal = (
            focal
            + sigmoid_focal_loss(
                logits[i].float(), onehot, options.focal_alpha, options.focal_gamma
            ).sum()
        )
    return focal, l1, giou


@HEAD_FAMILIES.register("sparse_rcnn")
class SparseRCNNFamily(HeadFamily):
    """Sparse R-CNN for `task.num_classes` classes; provides the object stream."""

    Options = SparseRCNNOptions
    kinds = ("boxes",)
    provides = (OBJECTS,)

    def build(self, spec: FeatureSpec) -> nn.Module:
        """Learnable proposals + dynamic stages on P2..P5."""
        return SparseRCNN(spec, self.task.num_classes, self.options.head_config())

    def loss(self, outputs: SparseRCNNOutputs, batch: Batch) -> Tensor:
        """Sum over stages of the weighted focal, L1 and GIoU terms / number of target boxes."""
        mask = self.task.labeled(batch)
        if not bool(mask.any()):
            return zero_loss(batch.images.device)
        opts = self.options
        device = outputs.stage_logits[-1].device
        images = [int(i) for i in torch.nonzero(mask).squeeze(1)]
        targets = set_targets(batch, device, self.task.num_classes)
        num_boxes = sum(len(targets[i].boxes) for i in images if targets[i] is not None)
        stages = list(zip(outputs.stage_logits, outputs.stage_boxes, strict=True))
        if not opts.deep_supervision:
            stages = stages[-1:]
        total = outputs.stage_logits[-1].sum() * 0.0
        for logits, boxes in stages:
            focal, l1, giou = stage_terms(logits, boxes, targets, outputs.image_sizes, images, opts)
            total = total + opts.class_weight * focal + opts.l1_weight * l1
            total = total + opts.giou_weight * giou
        return total / max(num_boxes, 1)
