"""Multi-object tracking and segmentation (MOTS) without trainable parameters.

MOTS joins two other tasks' predictions: the instance head's masks (`FramePrediction.instances`)
and the MOT tracker's ids on the detector's boxes (`FramePrediction.detections.track_ids`). The
instance head segments the detector's own detections (the shared object stream), so an instance
is the detection with the same box and class. **Join rule**: an instance and a detection of the
same class match when their box IoU is at least `min_iou` (0.99 by default: the boxes are the
same up to float noise); pairs are taken one to one, highest IoU first. A matched instance gets
the detection's id (>= 0 a track; -1 untracked, -2 a suppressed duplicate, as the tracker says);
an unmatched one gets -1.

The output is the instance field itself: `FramePrediction.instances.track_ids` (the `Instances`
convention for ids), which the MOTS evaluator (`drivemtl.evaluation.seg_track.MOTSEvaluator`) and
the writers (`drivemtl.data.writers.mots_frame` / `write_dense`) read; ids < 0 are not tracks.

**Ordering**: the join runs in `update_state`, which the framework calls after every task's
`postprocess` and, because this task `requires` `mot` and `instance`, after their `update_state`
(`drivemtl.models.multitask.finish_predictions`), whatever the config order; requesting `mots`
alone runs both of them too. The head (`track_join`) has no parameters and an exact-zero loss.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor

from drivemtl.ops.boxes import box_iou
from drivemtl.structures.batch import Batch
from drivemtl.structures.bdd import THING_CLASSES
from drivemtl.structures.instances import Instances
from drivemtl.structures.predictions import FramePrediction
from drivemtl.tasks.base import TASKS, Task, empty_predictions

UNTRACKED = -1


class MOTSExtras(BaseModel):
    """MOTS extras: the box IoU at which an instance is the same object as a tracked detection."""

    model_config = ConfigDict(extra="forbid")

    min_iou: float = Field(0.99, gt=0.0, le=1.0)


def join_track_ids(instances: Instances, detections: Instances, min_iou: float = 0.99) -> Tensor:
    """[N] track id of each instance: the id of its detection (same class, box IoU >= `min_iou`,
    matched one to one with the highest IoU first), -1 when it has none."""
    ids = torch.full((len(instances),), UNTRACKED, dtype=torch.int64)
    if detections.track_ids is None or not len(instances) or not len(detections):
        return ids
    iou = box_iou(instances.boxes.double(), detections.boxes.double().to(instances.boxes.device))
    same = instances.classes[:, None].cpu() == detections.classes[None, :].cpu()
    iou = torch.where(same & (iou.cpu() >= min_iou), iou.cpu(), torch.full_like(iou.cpu(), -1.0))
    det_ids = detections.track_ids.cpu()
    order = torch.argsort(iou.flatten(), descending=True, stable=True)
    used_inst, used_det = set(), set()
    for flat in order.tolist():
        i, d = divmod(flat, iou.shape[1])
        if iou[i, d] < 0:
            break
        if i in used_inst or d in used_det:
            continue
        used_inst.add(i)
        used_det.add(d)
        ids[i] = det_ids[d]
    return ids


@TASKS.register("mots")
class MOTSTask(Task):
    """Tracked instance masks of THING_CLASSES; target `Batch.instances` with masks and track ids."""

    name = "mots"
    group = "association"
    kind = "track_join"
    metric = "AssA"
    default_head = "track_join"
    Extras = MOTSExtras
    classes = THING_CLASSES
    requires = ("mot", "instance")

    def labeled(self, batch: Batch) -> Tensor:
        """Samples labelled for MOTS whose instances carry masks and track ids."""
        mask = batch.is_labeled(self.name).clone()
        for i, inst in enumerate(batch.instances):
            if inst is None or inst.track_ids is None or inst.masks is None:
                mask[i] = False
        return mask

    def predictions(self, outputs: Any, batch: Batch) -> list[FramePrediction]:
        """Nothing of its own: the ids are joined in `update_state`, after the tracker ran."""
        return empty_predictions(batch)

    def update_state(
        self,
        predictions: list[FramePrediction],
        outputs: Any,
        batch: Batch,
        states: list[dict[str, Any]],
    ) -> None:
        """Give each frame's instance masks the track ids of their detections (`instances`
        gets `track_ids`); the tracker's own state stays with `mot`."""
        for pred in predictions:
            if pred.instances is None or pred.detections is None:
                raise ValueError(
                    f"frame {pred.meta.name}: mots needs the instance and mot predictions "
                    f"(instances: {pred.instances is not None}, "
                    f"detections: {pred.detections is not None})"
                )
            ids = join_track_ids(pred.instances, pred.detections, self.options.min_iou)
            pred.instances = replace(pred.instances, track_ids=ids)
