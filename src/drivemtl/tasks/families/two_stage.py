"""The two-stage detector family (Faster R-CNN with FPN): RPN on P2..P6 + RoI box head.

The head provides the object stream (proposals, sampled RoIs, detections) that RoI heads need,
as two stages (decoder: RPN + RoI sampling; predictor: the box head), so that interaction blocks
on the object stream run in between and the box head can read the task's object vectors.
Criterion: VTDNet's L_RPN + L_D, objectness BCE + box regression for the RPN and CE +
class-specific box regression for the box head, over the images labelled for the task. The
regression is smooth-L1 by default, L1 (as VTDNet) with `rpn.reg_loss` / `roi.reg_loss: l1`.
"""

from __future__ import annotations

import torch
from pydantic import Field
from torch import Tensor, nn

from drivemtl.models.features import OBJECTS, FeatureSpec
from drivemtl.models.heads.detector import DetectionOutputs, TwoStageDetector, ground_truth
from drivemtl.models.heads.roi_heads import RoIConfig, box_loss
from drivemtl.models.heads.rpn import RPNConfig, rpn_loss
from drivemtl.structures.batch import Batch
from drivemtl.tasks.base import zero_loss
from drivemtl.tasks.families.base import HEAD_FAMILIES, HeadFamily, HeadOptions


class TwoStageOptions(HeadOptions):
    """RPN and RoI hyper-parameters and the RPN loss weight."""

    type: str = "two_stage"
    rpn: RPNConfig = Field(default_factory=RPNConfig)
    roi: RoIConfig = Field(default_factory=RoIConfig)
    rpn_loss_weight: float = Field(1.0, ge=0.0)


def _matched_boxes(sampled, gt_boxes: list) -> list[Tensor]:
    """Per image, the ground-truth box of each sampled RoI (the RoI itself for background)."""
    matched = []
    for i, (rois, gt_index) in enumerate(zip(sampled.boxes, sampled.gt_index, strict=True)):
        boxes = gt_boxes[i] if gt_boxes[i] is not None else rois.new_zeros((0, 4))
        target = rois.clone()
        positive = gt_index >= 0
        target[positive] = boxes[gt_index[positive]]
        matched.append(target)
    return matched


@HEAD_FAMILIES.register("two_stage")
class TwoStageFamily(HeadFamily):
    """RPN + box head for `task.num_classes` classes."""

    Options = TwoStageOptions
    kinds = ("boxes",)
    provides = (OBJECTS,)

    def build(self, spec: FeatureSpec) -> nn.Module:
        """RPN on P2..P6 + box head on P2..P5; the box head reads the task's object vectors
        when an interaction block writes them (`spec.object_vectors`)."""
        opts = self.options
        name = self.task.name
        return TwoStageDetector(
            spec, self.task.num_classes, rpn=opts.rpn, roi=opts.roi, task=name,
            vector_channels=spec.object_vectors.get(name),
        )  # fmt: skip

    def loss(self, outputs: DetectionOutputs, batch: Batch) -> Tensor:
        """rpn_loss_weight * (RPN cls + reg) + box cls + box reg over labelled images."""
        mask = self.task.labeled(batch)
        if not bool(mask.any()):
            return zero_loss(batch.images.device)
        if outputs.sampled is None:
            raise ValueError("detection loss needs outputs of a forward pass with targets")
        device = outputs.class_logits.device
        num_classes = self.task.num_classes
        images = [int(i) for i in torch.nonzero(mask).squeeze(1)]
        gt_boxes, _, gt_ignore = ground_truth(batch, device, num_classes)
        rpn_cls, rpn_reg = rpn_loss(outputs.rpn, gt_boxes, gt_ignore, self.options.rpn, images)
        sampled = outputs.sampled
        keep = torch.cat(
            [
                torch.full((len(b),), bool(mask[i]), device=device)
                for i, b in enumerate(sampled.boxes)
            ]
        )
        box_cls, box_reg = box_loss(
            outputs.class_logits[keep],
            outputs.box_deltas[keep],
            torch.cat(sampled.boxes)[keep],
            torch.cat(sampled.labels)[keep],
            torch.cat(_matched_boxes(sampled, gt_boxes))[keep],
            num_classes,
            self.options.roi.smooth_l1_beta,
            self.options.roi.reg_loss,
        )
        return self.options.rpn_loss_weight * (rpn_cls + rpn_reg) + box_cls + box_reg
