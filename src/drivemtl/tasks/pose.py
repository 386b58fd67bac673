"""Human pose: 18 BDD100K joints of pedestrians (keypoint heatmap head by default).

The keypoint head reads the object stream of the detection head (built as a support task when
detection itself is not enabled); its criterion lives in the head family.
"""

from __future__ import annotations

import torch
from pydantic import BaseModel, ConfigDict
from torch import Tensor

from drivemtl.models.heads.keypoint_head import decode_keypoints
from drivemtl.models.heads.mask_head import RoIHeadOutputs
from drivemtl.structures.batch import Batch
from drivemtl.structures.bdd import POSE_FLIP_PAIRS, POSE_JOINTS, THING_CLASSES
from drivemtl.structures.instances import Instances
from drivemtl.structures.predictions import FramePrediction
from drivemtl.tasks.base import TASKS, Task, empty_predictions
from drivemtl.tasks.coords import boxes_to_original, points_to_original


class PoseExtras(BaseModel):
    """Pose head extras: THING_CLASSES names that carry poses."""

    model_config = ConfigDict(extra="forbid")

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
    kind = "roi_keypoints"
    metric = "AP"
    default_head = "keypoint_rcnn"
    Extras = PoseExtras
    num_keypoints = len(POSE_JOINTS)

    def __init__(self, config=None) -> None:
        super().__init__(config)
        unknown = [c for c in self.options.person_classes if c not in THING_CLASSES]
        if unknown:
            raise ValueError(f"pose person_classes {unknown} are not in {THING_CLASSES}")

    def person_class_indices(self) -> tuple[int, ...]:
        """THING_CLASSES indices of the person classes."""
        return tuple(THING_CLASSES.index(c) for c in self.options.person_classes)

    def predictions(self, outputs: RoIHeadOutputs, batch: Batch) -> list[FramePrediction]:
        """Person detections with keypoints (x, y, score) in original-image pixels."""
        if outputs.scores is None:
            raise ValueError("pose postprocess needs outputs of an inference forward pass")
        predictions = empty_predictions(batch)
        for i, (pred, rows) in enumerate(zip(predictions, outputs.per_image(), strict=True)):
            boxes = outputs.boxes[i].float()
            keypoints = decode_keypoints(rows.float(), boxes)
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
