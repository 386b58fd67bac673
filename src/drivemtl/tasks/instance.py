"""Instance segmentation: per-object masks of the thing classes (Mask R-CNN head by default).

The mask head reads the object stream of the detection head (built as a support task when
detection itself is not enabled); its criterion lives in the head family.
"""

from __future__ import annotations

import torch
from pydantic import BaseModel, ConfigDict, Field

from drivemtl.models.heads.mask_head import RoIHeadOutputs, paste_masks
from drivemtl.structures.batch import Batch
from drivemtl.structures.bdd import THING_CLASSES
from drivemtl.structures.instances import Instances
from drivemtl.structures.predictions import FramePrediction
from drivemtl.tasks.base import TASKS, Task, empty_predictions
from drivemtl.tasks.coords import boxes_to_original


class InstanceExtras(BaseModel):
    """Instance head extras: the mask probability threshold of the decoded masks."""

    model_config = ConfigDict(extra="forbid")

    mask_threshold: float = Field(0.5, gt=0.0, lt=1.0)


@TASKS.register("instance")
class InstanceTask(Task):
    """Per-object masks of THING_CLASSES; target `Batch.instances` with `masks`."""

    name = "instance"
    group = "localization"
    kind = "roi_masks"
    metric = "AP"
    default_head = "mask_rcnn"
    Extras = InstanceExtras
    classes = THING_CLASSES

    def predictions(self, outputs: RoIHeadOutputs, batch: Batch) -> list[FramePrediction]:
        """Detected objects with boolean masks pasted into the original image."""
        if outputs.scores is None:
            raise ValueError("instance postprocess needs outputs of an inference forward pass")
        predictions = empty_predictions(batch)
        for i, (pred, rows) in enumerate(zip(predictions, outputs.per_image(), strict=True)):
            boxes, classes = outputs.boxes[i], outputs.classes[i]
            n = boxes.shape[0]
            rows = rows.float()
            probs = rows[torch.arange(n, device=rows.device), classes].sigmoid()
            if pred.meta.flipped:
                probs = torch.flip(probs, dims=(-1,))
            orig = boxes_to_original(boxes.float(), pred.meta, batch.image_sizes[i])
            pasted = paste_masks(probs, orig, pred.meta.orig_size)
            pred.instances = Instances(
                boxes=orig.cpu(),
                classes=classes.cpu(),
                scores=outputs.scores[i].float().cpu(),
                masks=(pasted >= self.options.mask_threshold).cpu(),
            )
        return predictions
