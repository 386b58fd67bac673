"""Object detection: 2D boxes of the 8 BDD thing classes (or 10), by default the two-stage head.

The `sparse_rcnn` head family (set prediction, no NMS) serves it too; both fill the decoded
`boxes`, `scores`, `classes` that `predictions` reads.

The detection head provides the object stream; when only instance segmentation or pose is
enabled, the network builds this task as a support task for them (see `STREAM_PROVIDERS`).
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict
from torch import Tensor

from drivemtl.models.features import OBJECTS
from drivemtl.models.heads.detector import DetectionOutputs
from drivemtl.models.heads.sparse_rcnn import SparseRCNNOutputs
from drivemtl.structures.batch import Batch
from drivemtl.structures.bdd import DETECTION_CLASSES_10, THING_CLASSES
from drivemtl.structures.instances import Instances
from drivemtl.structures.predictions import FramePrediction
from drivemtl.tasks.base import STREAM_PROVIDERS, TASKS, Task, empty_predictions
from drivemtl.tasks.coords import boxes_to_original


class DetectionExtras(BaseModel):
    """Detection head extras: the class list (8 thing classes or the 10 of BDD100K detection)."""

    model_config = ConfigDict(extra="forbid")

    num_classes: Literal[8, 10] = 8


@TASKS.register("detection")
class DetectionTask(Task):
    """2D boxes of THING_CLASSES (or DETECTION_CLASSES_10); target `Batch.instances`."""

    name = "detection"
    group = "localization"
    kind = "boxes"
    metric = "AP"
    default_head = "two_stage"
    Extras = DetectionExtras

    def __init__(self, config=None) -> None:
        super().__init__(config)
        # Tasks whose samples carry complete box labels; build_model changes it when this head
        # only serves instance / pose as a support task.
        self.label_tasks: tuple[str, ...] = (self.name,)

    @property
    def num_classes(self) -> int:
        """Number of box classes."""
        return int(self.options.num_classes)

    @property
    def classes(self) -> tuple[str, ...]:
        """Class names in index order."""
        return THING_CLASSES if self.num_classes == 8 else DETECTION_CLASSES_10

    def labeled(self, batch: Batch) -> Tensor:
        """Samples labelled for any of `label_tasks`."""
        mask = torch.zeros(len(batch), dtype=torch.bool, device=batch.images.device)
        for task in self.label_tasks:
            mask = mask | batch.is_labeled(task).to(mask.device)
        return mask

    def predictions(
        self, outputs: DetectionOutputs | SparseRCNNOutputs, batch: Batch
    ) -> list[FramePrediction]:
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


STREAM_PROVIDERS.add(OBJECTS, "detection")
