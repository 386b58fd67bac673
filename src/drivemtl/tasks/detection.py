"""Object detection with the two-stage head (RPN + RoI box head); 8 BDD thing classes or 10.

The loss is VTDNet's L_RPN + L_D: objectness BCE + box smooth-L1 for the RPN, CE + class-specific
smooth-L1 for the box head, over the images labelled for detection only.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import Tensor, nn

from drivemtl.models.heads import HEADS
from drivemtl.models.heads.detector import DetectionOutputs, ground_truth
from drivemtl.models.heads.features import FeatureSpec
from drivemtl.models.heads.roi_heads import RoIConfig, box_loss
from drivemtl.models.heads.rpn import RPNConfig, rpn_loss
from drivemtl.structures.batch import Batch
from drivemtl.structures.bdd import DETECTION_CLASSES_10, THING_CLASSES
from drivemtl.structures.instances import Instances
from drivemtl.structures.predictions import FramePrediction
from drivemtl.tasks.base import TASKS, HeadOptions, Task, empty_predictions, zero_loss
from drivemtl.tasks.coords import boxes_to_original


class DetectionOptions(HeadOptions):
    """Two-stage detector options: class count, RPN and RoI hyper-parameters, RPN loss weight."""

    type: str = "two_stage"
    num_classes: Literal[8, 10] = 8
    rpn: RPNConfig = Field(default_factory=RPNConfig)
    roi: RoIConfig = Field(default_factory=RoIConfig)
    rpn_loss_weight: float = Field(1.0, ge=0.0)


@TASKS.register("detection")
class DetectionTask(Task):
    """2D boxes of THING_CLASSES (or DETECTION_CLASSES_10); target `Batch.instances`."""

    name = "detection"
    group = "localization"
    fields = ("instances",)
    metric = "AP"
    Options = DetectionOptions

    def __init__(self, config=None) -> None:
        super().__init__(config)
        # Tasks whose samples carry complete box labels; build_model changes it when this head
        # only serves instance / pose.
        self.label_tasks: tuple[str, ...] = (self.name,)

    @property
    def classes(self) -> tuple[str, ...]:
        """Class names in index order."""
        return THING_CLASSES if self.options.num_classes == 8 else DETECTION_CLASSES_10

    def labeled(self, batch: Batch) -> Tensor:
        """Samples labelled for any of `label_tasks`."""
        mask = torch.zeros(len(batch), dtype=torch.bool, device=batch.images.device)
        for task in self.label_tasks:
            mask = mask | batch.is_labeled(task).to(mask.device)
        return mask

    def build_head(self, spec: FeatureSpec) -> nn.Module:
        """RPN on P2..P6 + box head on P2..P5."""
        opts = self.options
        return HEADS.get(opts.type)(spec, opts.num_classes, rpn=opts.rpn, roi=opts.roi)

    def loss(self, outputs: DetectionOutputs, batch: Batch) -> Tensor:
        """rpn_loss_weight * (RPN cls + reg) + box cls + box reg over labelled images."""
        mask = self.labeled(batch)
        if not bool(mask.any()):
            return zero_loss(batch.images.device)
        if outputs.sampled is None:
            raise ValueError("detection loss needs outputs of a forward pass with targets")
        device = outputs.class_logits.device
        images = [int(i) for i in torch.nonzero(mask).squeeze(1)]
        gt_boxes, _, gt_ignore = ground_truth(batch, device, self.options.num_classes)
        rpn_cls, rpn_reg = rpn_loss(outputs.rpn, gt_boxes, gt_ignore, self.options.rpn, images)
        sampled = outputs.sampled
        keep = torch.cat(
            [
                torch.full((len(b),), bool(mask[i]), device=device)
                for i, b in enumerate(sampled.boxes)
            ]
        )
        matched = []
        for i, (rois, gt_index) in enumerate(zip(sampled.boxes, sampled.gt_index, strict=True)):
            boxes = gt_boxes[i] if gt_boxes[i] is not None else rois.new_zeros((0, 4))
            target = rois.clone()
            positive = gt_index >= 0
            target[positive] = boxes[gt_index[positive]]
            matched.append(target)
        box_cls, box_reg = box_loss(
            outputs.class_logits[keep],
            outputs.box_deltas[keep],
            torch.cat(sampled.boxes)[keep],
            torch.cat(sampled.labels)[keep],
            torch.cat(matched)[keep],
            self.options.num_classes,
            self.options.roi.smooth_l1_beta,
        )
        return self.options.rpn_loss_weight * (rpn_cls + rpn_reg) + box_cls + box_reg

    def postprocess(self, outputs: DetectionOutputs, batch: Batch) -> list[FramePrediction]:
        """Boxes, classes and scores per sample in original-image pixels."""
        if outputs.boxes is None or outputs.scores is None or outputs.classes is None:
            raise ValueError("detection postprocess needs outputs of an inference forward pass")
        predictions = empty_predictions(batch)
        for i, pred in enumerate(predictions):
            boxes = boxes_to_original(outputs.boxes[i].float(), pred.meta, batch.image_sizes[i])
            pred.detections = Instances(
                boxes=boxes.cpu(),
                classes=outputs.classes[i].cpu(),
                scores=outputs.scores[i].float().cpu(),
            )
        return predictions
