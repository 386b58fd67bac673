"""RoI head families on the object stream: Mask R-CNN masks and keypoint heatmaps.

Both need the object stream (sampled RoIs in training, detections at inference); when no enabled
task provides it, the network builds a support detector from the `detector` options. A head
whose task gets its own object vectors from an interaction block (`spec.object_vectors`) adds
each RoI's vector to its pooled features.
Criteria: per-pixel BCE of the true class's 28x28 mask against the ground-truth mask resampled
into each positive RoI (masks); squared error to Gaussian heatmaps, or the cross entropy of each
joint's spatial softmax (keypoints).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from drivemtl.models.features import OBJECTS, FeatureSpec
from drivemtl.models.heads.keypoint_head import KeypointHead, keypoint_targets
from drivemtl.models.heads.mask_head import MaskHead, RoIHeadOutputs
from drivemtl.ops.roi_align import roi_align
from drivemtl.structures.batch import Batch
from drivemtl.tasks.base import zero_loss
from drivemtl.tasks.families.base import HEAD_FAMILIES, HeadFamily, HeadOptions


class RoIHeadOptions(HeadOptions):
    """Options shared by the heads that run on detector RoIs (instance masks, pose keypoints)."""

    detector: dict[str, Any] = Field(
        default_factory=dict,
        description="detection head options when detection itself is not a task",
    )
    channels: int = Field(256, gt=0)
    num_convs: int = Field(4, ge=0)
    resolution: int = Field(14, gt=0, description="RoIAlign size of the head's input")


class RoIFamily(HeadFamily):
    """Common part: reads the object stream, passes `detector` options to a support detector."""

    needs = (OBJECTS,)

    def provider_options(self, stream: str) -> dict[str, Any]:
        """The `detector` options for the object stream's support detector."""
        return dict(self.options.detector) if stream == OBJECTS else {}


class MaskOptions(RoIHeadOptions):
    """Mask head options (masks are twice the RoIAlign resolution)."""

    type: str = "mask_rcnn"


@HEAD_FAMILIES.register("mask_rcnn")
class MaskRCNNFamily(RoIFamily):
    """Class-specific 28x28 masks for `task.classes`."""

    Options = MaskOptions
    kinds = ("roi_masks",)

    def build(self, spec: FeatureSpec) -> nn.Module:
        """Mask head with one mask channel per class."""
        o = self.options
        return MaskHead(
            spec, len(self.task.classes), channels=o.channels, num_convs=o.num_convs,
            resolution=o.resolution, task=self.task.name,
        )  # fmt: skip

    def loss(self, outputs: RoIHeadOutputs, batch: Batch) -> Tensor:
        """Mean BCE of the true-class mask logits over positive RoIs of labelled images."""
        mask = self.task.labeled(batch)
        if not bool(mask.any()):
            return zero_loss(batch.images.device)
        if outputs.gt_index is None:
            raise ValueError("instance loss needs outputs of a forward pass with targets")
        logits, targets = [], []
        size = outputs.logits.shape[-1]
        for i, (rows, boxes, classes, gt) in enumerate(
            zip(outputs.per_image(), outputs.boxes, outputs.classes, outputs.gt_index, strict=True)
        ):
            n = boxes.shape[0]
            if not bool(mask[i]) or n == 0:
                continue
            inst = batch.instances[i]
            if inst is None or inst.masks is None:
                raise ValueError(f"frame {batch.metas[i].name}: labelled for instance, no masks")
            gt_masks = inst.masks.to(rows.device)[:, None].float()
            rois = torch.cat((gt[:, None].to(boxes), boxes), dim=1)
            target = roi_align(gt_masks, rois, size, 1.0, 2, True) >= 0.5
            logits.append(rows[torch.arange(n, device=rows.device), classes])
            targets.append(target[:, 0].to(rows.dtype))
        if not logits:
            return outputs.logits.sum() * 0.0
        return F.binary_cross_entropy_with_logits(torch.cat(logits), torch.cat(targets))


class KeypointOptions(RoIHeadOptions):
    """Keypoint head options (heatmaps are 4x the RoIAlign resolution)."""

    type: str = "keypoint_rcnn"
    channels: int = Field(512, gt=0)
    num_convs: int = Field(8, ge=0)
    sigma: float = Field(2.0, gt=0.0, description="Gaussian std of the targets, heatmap pixels")
    loss: Literal["mse", "softmax_ce"] = Field(
        "mse",
        description="mse: squared error to the Gaussian maps; softmax_ce: cross-entropy of each "
        "joint's spatial softmax against the normalised Gaussian (learns faster on short budgets)",
    )


@HEAD_FAMILIES.register("keypoint_rcnn")
class KeypointRCNNFamily(RoIFamily):
    """Per-joint heatmaps for RoIs of `task.person_class_indices()`."""

    Options = KeypointOptions
    kinds = ("roi_keypoints",)

    def build(self, spec: FeatureSpec) -> nn.Module:
        """Keypoint head for the task's joints and person classes."""
        o = self.options
        return KeypointHead(
            spec, self.task.num_keypoints, person_classes=self.task.person_class_indices(),
            channels=o.channels, num_convs=o.num_convs, resolution=o.resolution,
            task=self.task.name,
        )  # fmt: skip

    def loss(self, outputs: RoIHeadOutputs, batch: Batch) -> Tensor:
        """Squared error between predicted and Gaussian heatmaps, summed over each heatmap and
        averaged over valid joints (a per-pixel mean would shrink the loss by the map's area,
        56 x 56, and leave the keypoint head without gradient next to the other tasks)."""
        mask = self.task.labeled(batch)
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
            errors.append(self._per_joint(rows, targets.to(rows.dtype))[valid])
        if not errors or sum(e.numel() for e in errors) == 0:
            return outputs.logits.sum() * 0.0
        return torch.cat(errors).mean()

    def _per_joint(self, rows: Tensor, targets: Tensor) -> Tensor:
        if self.options.loss == "softmax_ce":
            log_probs = torch.log_softmax(rows.flatten(-2), dim=-1)
            dist = targets.flatten(-2)
            dist = dist / dist.sum(dim=-1, keepdim=True).clamp(min=1e-12)
            return -(dist * log_probs).sum(dim=-1)
        return ((rows - targets) ** 2).sum(dim=(-2, -1))

    def decode(self, outputs: RoIHeadOutputs, batch: Batch) -> RoIHeadOutputs:
        """Heatmaps whose peaks are the joint scores (spatial softmax for `softmax_ce`)."""
        if self.options.loss != "softmax_ce":
            return outputs
        maps = outputs.logits.float()
        return replace(outputs, logits=torch.softmax(maps.flatten(-2), dim=-1).view_as(maps))
