"""Drivable area: 3 classes (direct, alternative, background), per-pixel cross entropy."""

from __future__ import annotations

from torch import Tensor

from drivemtl.structures.bdd import DRIVABLE_CLASSES
from drivemtl.structures.predictions import FramePrediction
from drivemtl.tasks.base import TASKS
from drivemtl.tasks.semantic import SemanticTask


@TASKS.register("drivable")
class DrivableTask(SemanticTask):
    """Per-pixel classification into DRIVABLE_CLASSES (255 = ignore)."""

    name = "drivable"
    metric = "mIoU"
    classes = DRIVABLE_CLASSES
    target_field = "drivable"

    def assign(self, pred: FramePrediction, labels: Tensor, confidence: Tensor) -> None:
        """Store the class map and its confidence (pseudo labels filter on it) as drivable."""
        pred.drivable = labels
        pred.drivable_confidence = confidence
