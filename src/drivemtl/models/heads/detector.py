"""The two-stage detection head: RPN on P2..P6 + RoI box head on P2..P5 (Faster R-CNN with FPN).

It also produces VTDNet's instance features: the proposals, and (in training) the RoIs sampled
against the ground truth, the object stream `features.objects` for the mask and keypoint heads.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from drivemtl.models.features import OBJECTS, PIXEL, Features, FeatureSpec, ObjectFeatures
from drivemtl.models.heads.roi_heads import BoxHead, RoIConfig, SampledRoIs, detect, sample_rois
from drivemtl.models.heads.rpn import RPN, RPNConfig, RPNOutputs
from drivemtl.structures.batch import Batch


@dataclass
class DetectionOutputs:
    """Raw outputs of the detection head.

    Training (a batch was given): `sampled` RoIs with `class_logits` / `box_deltas` for them.
    Inference: `class_logits` / `box_deltas` for the proposals and the final per-image `boxes`,
    `scores`, `classes` in padded-input pixels.
    """

    rpn: RPNOutputs
    class_logits: Tensor
    box_deltas: Tensor
    sampled: SampledRoIs | None = None
    boxes: list[Tensor] | None = None
    scores: list[Tensor] | None = None
    classes: list[Tensor] | None = None


def ground_truth(
    batch: Batch, device: torch.device, num_classes: int | None = None
) -> tuple[list, list, list]:
    """Per image (boxes, classes, ignore) of `batch.instances`, None for images without them.

    Objects of classes the detector does not predict (index >= `num_classes`, e.g. traffic lights
    for an 8-class detector on a 10-class set) become ignore regions, so indices stay aligned with
    `batch.instances` for the mask / keypoint heads.
    """
    boxes, classes, ignore = [], [], []
    for inst in batch.instances:
        if inst is None:
            boxes.append(None)
            classes.append(None)
            ignore.append(None)
            continue
        cls = inst.classes.to(device)
        ign = None if inst.ignore is None else inst.ignore.to(device).bool()
        if num_classes is not None and bool((cls >= num_classes).any()):
            outside = cls >= num_classes
            ign = outside if ign is None else ign | outside
            cls = cls.clamp(max=num_classes - 1)
        boxes.append(inst.boxes.to(device).float())
        classes.append(cls)
        ignore.append(ign)
    return boxes, classes, ignore


class TwoStageDetector(nn.Module):
    """RPN + box head; `forward(features, batch)` samples RoIs when `batch` is given.

    It provides the object stream (`features.objects`) that the RoI heads declare they need.
    """

    needs = (PIXEL,)
    provides = (OBJECTS,)

    def __init__(
        self,
        spec: FeatureSpec,
        num_classes: int,
        rpn: RPNConfig | None = None,
        roi: RoIConfig | None = None,
        rpn_strides: tuple[int, ...] = (4, 8, 16, 32, 64),
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.rpn_strides = tuple(rpn_strides)
        self.rpn = RPN(spec.pixel_channels, self.rpn_strides, rpn or RPNConfig())
        self.roi_config = roi or RoIConfig()
        self.box_head = BoxHead(spec.pixel_channels, num_classes, self.roi_config)

    def forward(self, features: Features, batch: Batch | None = None) -> DetectionOutputs:
        """Proposals, then box classification / regression of sampled RoIs or of the proposals."""
        rpn_out = self.rpn(
            features.levels(self.rpn_strides), features.image_sizes, training=batch is not None
        )
        box_maps = features.levels(self.roi_config.pooler_strides)
        if batch is not None:
            device = features.image.device
            boxes, classes, ignore = ground_truth(batch, device, self.num_classes)
            sampled = sample_rois(
                rpn_out.proposals, boxes, classes, ignore, self.num_classes, self.roi_config
            )
            logits, deltas = self.box_head(box_maps, sampled.boxes)
            features.objects = ObjectFeatures(
                proposals=rpn_out.proposals,
                rois=sampled.boxes,
                roi_labels=sampled.labels,
                roi_gt_index=sampled.gt_index,
            )
            return DetectionOutputs(rpn_out, logits, deltas, sampled=sampled)
        logits, deltas = self.box_head(box_maps, rpn_out.proposals)
        outputs, features.objects = self.detections(rpn_out, logits, deltas, features.image_sizes)
        return outputs

    def detections(
        self,
        rpn_out: RPNOutputs,
        logits: Tensor,
        deltas: Tensor,
        image_sizes: list[tuple[int, int]],
    ) -> tuple[DetectionOutputs, ObjectFeatures]:
        """Inference outputs and the object stream from the box head's outputs on the proposals
        (score threshold, class-aware NMS, top-k: shared by PyTorch and exported runtimes)."""
        det_boxes, det_scores, det_classes = detect(
            logits, deltas, rpn_out.proposals, image_sizes, self.num_classes, self.roi_config
        )
        objects = ObjectFeatures(
            proposals=rpn_out.proposals,
            detections=det_boxes,
            det_classes=det_classes,
            det_scores=det_scores,
        )
        outputs = DetectionOutputs(
            rpn_out, logits, deltas, boxes=det_boxes, scores=det_scores, classes=det_classes
        )
        return outputs, objects
