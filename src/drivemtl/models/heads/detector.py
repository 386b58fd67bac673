"""The two-stage detection head: RPN on P2..P6 + RoI box head on P2..P5 (Faster R-CNN with FPN).

It also produces VTDNet's instance features: the proposals, and (in training) the RoIs sampled
against the ground truth, the object stream `features.objects` for the mask and keypoint heads.

The head is split in two stages, so that interaction blocks on the object stream (VTDNet's
localization Intra-IB and the Cross-IB) run between the proposals and the box head: `decode`
(RPN, and in training RoI sampling) provides the object stream with the box head's input boxes;
`predict` (the box head on those boxes, and at inference the detections with their source
proposals) modifies it, so the mask / keypoint / embedding heads, which read the detections,
run after it. Without such blocks the two stages run back to back, as the whole head did.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import Tensor, nn

from drivemtl.models.features import OBJECTS, PIXEL, Features, FeatureSpec, ObjectFeatures
from drivemtl.models.heads.roi_heads import (
    BoxHead,
    RoIConfig,
    SampledRoIs,
    detect_with_sources,
    sample_rois,
)
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


@dataclass
class DetectorProposals:
    """What the detector's decoder stage hands its predictor: the RPN's outputs and, in
    training, the sampled RoIs (the box head's input boxes; at inference, the proposals)."""

    rpn: RPNOutputs
    sampled: SampledRoIs | None = None


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
    """RPN + box head as a split head (see the module docstring); `forward(features, batch)`
    runs both stages and samples RoIs when `batch` is given.

    `task` names the task whose object vectors the box head reads when `vector_channels` is set
    (an interaction block writes them; none: the head reads no vectors).
    """

    needs = (PIXEL,)
    provides = (OBJECTS,)
    predictor_modifies = (OBJECTS,)
    predictor_modules = ("box_head",)

    def __init__(
        self,
        spec: FeatureSpec,
        num_classes: int,
        rpn: RPNConfig | None = None,
        roi: RoIConfig | None = None,
        rpn_strides: tuple[int, ...] = (4, 8, 16, 32, 64),
        task: str = "detection",
        vector_channels: int | None = None,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.task = task
        self.rpn_strides = tuple(rpn_strides)
        self.rpn = RPN(spec.pixel_channels, self.rpn_strides, rpn or RPNConfig())
        self.roi_config = roi or RoIConfig()
        self.box_head = BoxHead(spec.pixel_channels, num_classes, self.roi_config, vector_channels)

    def forward(self, features: Features, batch: Batch | None = None) -> DetectionOutputs:
        """Proposals, then box classification / regression of sampled RoIs or of the proposals."""
        return self.predict(self.decode(features, batch), features, batch)

    def decode(self, features: Features, batch: Batch | None = None) -> DetectorProposals:
        """RPN proposals and, with `batch`, RoIs sampled against its ground truth; provides the
        object stream with them (`rois` in training, `proposals` only at inference)."""
        rpn_out = self.rpn(
            features.levels(self.rpn_strides), features.image_sizes, training=batch is not None
        )
        if batch is None:
            features.objects = ObjectFeatures(proposals=rpn_out.proposals)
            return DetectorProposals(rpn_out)
        boxes, classes, ignore = ground_truth(batch, features.image.device, self.num_classes)
        sampled = sample_rois(
            rpn_out.proposals, boxes, classes, ignore, self.num_classes, self.roi_config
        )
        features.objects = ObjectFeatures(
            proposals=rpn_out.proposals,
            rois=sampled.boxes,
            roi_labels=sampled.labels,
            roi_gt_index=sampled.gt_index,
        )
        return DetectorProposals(rpn_out, sampled)

    def predict(
        self, proposals: DetectorProposals, features: Features, batch: Batch | None = None
    ) -> DetectionOutputs:
        """The box head on the sampled RoIs (training) or the proposals (inference; then the
        detections join the object stream, which keeps what interaction blocks wrote)."""
        objects = features.require_objects("the detector's box head")
        box_maps = features.levels(self.roi_config.pooler_strides)
        rpn_out, sampled = proposals.rpn, proposals.sampled
        boxes = sampled.boxes if sampled is not None else rpn_out.proposals
        logits, deltas = self.box_head(box_maps, boxes, self._vectors(objects, boxes))
        if sampled is not None:
            return DetectionOutputs(rpn_out, logits, deltas, sampled=sampled)
        outputs, found = self.detections(rpn_out, logits, deltas, features.image_sizes)
        features.objects = replace(
            objects,
            detections=found.detections,
            det_classes=found.det_classes,
            det_scores=found.det_scores,
            det_sources=found.det_sources,
        )
        return outputs

    def _vectors(self, objects: ObjectFeatures, boxes: list[Tensor]) -> Tensor | None:
        """The object vectors of the box head's input boxes, when the box head reads them."""
        if self.box_head.vector_input is None:
            return None
        sources = [torch.arange(len(b), device=b.device) for b in boxes]
        return objects.task_vectors_at(self.task, sources)

    def detections(
        self,
        rpn_out: RPNOutputs,
        logits: Tensor,
        deltas: Tensor,
        image_sizes: list[tuple[int, int]],
    ) -> tuple[DetectionOutputs, ObjectFeatures]:
        """Inference outputs and the object stream from the box head's outputs on the proposals
        (score threshold, class-aware NMS, top-k: shared by PyTorch and exported runtimes);
        `det_sources` gives each detection's proposal."""
        det_boxes, det_scores, det_classes, det_sources = detect_with_sources(
            logits, deltas, rpn_out.proposals, image_sizes, self.num_classes, self.roi_config
        )
        objects = ObjectFeatures(
            proposals=rpn_out.proposals,
            detections=det_boxes,
            det_classes=det_classes,
            det_scores=det_scores,
            det_sources=det_sources,
        )
        outputs = DetectionOutputs(
            rpn_out, logits, deltas, boxes=det_boxes, scores=det_scores, classes=det_classes
        )
        return outputs, objects
