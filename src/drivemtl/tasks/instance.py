"""Instance segmentation: the Mask R-CNN mask head on the detection head's RoIs.

Loss: per-pixel BCE between the true class's 28x28 mask logits and the ground-truth mask resampled
into each positive RoI, over images labelled for instance segmentation.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from drivemtl.models.heads import HEADS
from drivemtl.models.heads.features import FeatureSpec
from drivemtl.models.heads.mask_head import RoIHeadOutputs, paste_masks
from drivemtl.ops.roi_align import roi_align
from drivemtl.structures.batch import Batch
from drivemtl.structures.bdd import THING_CLASSES
from drivemtl.structures.instances import Instances
from drivemtl.structures.predictions import FramePrediction
from drivemtl.tasks.base import TASKS, RoIHeadOptions, Task, empty_predictions, zero_loss
from drivemtl.tasks.coords import boxes_to_original


class InstanceOptions(RoIHeadOptions):
    """Mask head options (masks are twice the RoIAlign resolution)."""

    type: str = "mask_rcnn"
    mask_threshold: float = Field(0.5, gt=0.0, lt=1.0)


@TASKS.register("instance")
class InstanceTask(Task):
    """Per-object masks of THING_CLASSES; target `Batch.instances` with `masks`."""

    name = "instance"
    group = "localization"
    fields = ("instances",)
    metric = "AP"
    Options = InstanceOptions
    requires = ("detection",)
    classes = THING_CLASSES

    def build_head(self, spec: FeatureSpec) -> nn.Module:
        """Mask head with one mask channel per thing class."""
        o = self.options
        return HEADS.get(o.type)(
            spec,
            len(self.classes),
            channels=o.channels,
            num_convs=o.num_convs,
            resolution=o.resolution,
        )

    def loss(self, outputs: RoIHeadOutputs, batch: Batch) -> Tensor:
        """Mean BCE of the true-class mask logits over positive RoIs of labelled images."""
        mask = self.labeled(batch)
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

    def postprocess(self, outputs: RoIHeadOutputs, batch: Batch) -> list[FramePrediction]:
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
