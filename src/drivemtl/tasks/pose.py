"""Human pose: 18 BDD100K joints per detected pedestrian, Gaussian heatmaps with an MSE loss."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import Tensor, nn

from drivemtl.models.heads import HEADS
from drivemtl.models.heads.features import FeatureSpec
from drivemtl.models.heads.keypoint_head import decode_keypoints, keypoint_targets
from drivemtl.models.heads.mask_head import RoIHeadOutputs
from drivemtl.structures.batch import Batch
from drivemtl.structures.bdd import POSE_FLIP_PAIRS, POSE_JOINTS, THING_CLASSES
from drivemtl.structures.instances import Instances
from drivemtl.structures.predictions import FramePrediction
from drivemtl.tasks.base import TASKS, RoIHeadOptions, Task, empty_predictions, zero_loss
from drivemtl.tasks.coords import boxes_to_original, points_to_original


class PoseOptions(RoIHeadOptions):
    """Keypoint head options (heatmaps are 4x the RoIAlign resolution); `person_classes` are
    THING_CLASSES names that carry poses."""

    type: str = "keypoint_rcnn"
    channels: int = Field(512, gt=0)
    num_convs: int = Field(8, ge=0)
    sigma: float = Field(2.0, gt=0.0, description="Gaussian std of the targets, heatmap pixels")
    loss: Literal["mse", "softmax_ce"] = Field(
        "mse",
        description="mse: squared error to the Gaussian maps; softmax_ce: cross-entropy of each "
        "joint's spatial softmax against the normalised Gaussian (learns faster on short budgets)",
    )
    person_classes: tuple[str, ...] = ("pedestrian",)


def flip_joints(keypoints: Tensor) -> Tensor:
    """Swap left / right joints of [N, K, 3] keypoints (after un-flipping coordinates)."""
    out = keypoints.clone()
    for left, right in POSE_FLIP_PAIRS:
        out[:, left], out[:, right] = keypoints[:, right], keypoints[:, left]
    return out


@TASKS.register("pose")
class PoseTask(Task):
    """Keypoints [N, 18, 3] of pedestrians; target `Batch.instances` with `keypoints`."""

    name = "pose"
    group = "localization"
    fields = ("instances",)
    metric = "AP"
    Options = PoseOptions
    requires = ("detection",)

    def build_head(self, spec: FeatureSpec) -> nn.Module:
        """Keypoint head for the configured person classes."""
        o = self.options
        unknown = [c for c in o.person_classes if c not in THING_CLASSES]
        if unknown:
            raise ValueError(f"pose person_classes {unknown} are not in {THING_CLASSES}")
        return HEADS.get(o.type)(
            spec,
            len(POSE_JOINTS),
            person_classes=tuple(THING_CLASSES.index(c) for c in o.person_classes),
            channels=o.channels,
            num_convs=o.num_convs,
            resolution=o.resolution,
        )

    def loss(self, outputs: RoIHeadOutputs, batch: Batch) -> Tensor:
        """Squared error between predicted and Gaussian heatmaps, summed over each heatmap and
        averaged over valid joints (a per-pixel mean would shrink the loss by the map's area,
        56 x 56, and leave the keypoint head without gradient next to the other tasks)."""
        mask = self.labeled(batch)
        if not bool(mask.any()):
            return zero_loss(batch.images.device)
        if outputs.gt_index is None:
            raise ValueError("pose loss needs outputs of a forward pass with targets")
        size = outputs.logits.shape[-1]
        errors = []
        for i, (rows, boxes, gt) in enumerate(
            zip(outputs.per_image(), outputs.boxes, outputs.gt_index, strict=True)
        ):
            if not bool(mask[i]) or boxes.shape[0] == 0:
                continue
            inst = batch.instances[i]
            if inst is None or inst.keypoints is None:
                raise ValueError(f"frame {batch.metas[i].name}: labelled for pose, no keypoints")
            keypoints = inst.keypoints.to(rows.device).float()[gt]
            targets, valid = keypoint_targets(keypoints, boxes, size, self.options.sigma)
            targets = targets.to(rows.dtype)
            if self.options.loss == "softmax_ce":
                log_probs = torch.log_softmax(rows.flatten(-2), dim=-1)
                dist = targets.flatten(-2)
                dist = dist / dist.sum(dim=-1, keepdim=True).clamp(min=1e-12)
                per_joint = -(dist * log_probs).sum(dim=-1)
            else:
                per_joint = ((rows - targets) ** 2).sum(dim=(-2, -1))
            errors.append(per_joint[valid])
        if not errors or sum(e.numel() for e in errors) == 0:
            return outputs.logits.sum() * 0.0
        return torch.cat(errors).mean()

    def postprocess(self, outputs: RoIHeadOutputs, batch: Batch) -> list[FramePrediction]:
        """Person detections with keypoints (x, y, score) in original-image pixels."""
        if outputs.scores is None:
            raise ValueError("pose postprocess needs outputs of an inference forward pass")
        predictions = empty_predictions(batch)
        for i, (pred, rows) in enumerate(zip(predictions, outputs.per_image(), strict=True)):
            boxes = outputs.boxes[i].float()
            heatmaps = rows.float()
            if self.options.loss == "softmax_ce":  # joint scores become peak probabilities
                heatmaps = torch.softmax(heatmaps.flatten(-2), dim=-1).view_as(heatmaps)
            keypoints = decode_keypoints(heatmaps, boxes)
            size = batch.image_sizes[i]
            xy = points_to_original(keypoints[..., :2], pred.meta, size)
            keypoints = torch.cat((xy, keypoints[..., 2:]), dim=-1)
            if pred.meta.flipped:
                keypoints = flip_joints(keypoints)
            pred.poses = Instances(
                boxes=boxes_to_original(boxes, pred.meta, size).cpu(),
                classes=outputs.classes[i].cpu(),
                scores=outputs.scores[i].float().cpu(),
                keypoints=keypoints.cpu(),
            )
        return predictions
