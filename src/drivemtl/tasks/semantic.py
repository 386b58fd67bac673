"""Semantic segmentation: 19 BDD100K / Cityscapes classes, per-pixel cross entropy."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor

from drivemtl.models.config import TaskConfig
from drivemtl.structures.batch import Batch
from drivemtl.structures.bdd import SEMANTIC_CLASSES
from drivemtl.structures.predictions import FramePrediction
from drivemtl.tasks.base import TASKS, zero_loss
from drivemtl.tasks.dense import DenseTask
from drivemtl.tasks.losses import cross_entropy


class ClassListOptions(BaseModel):
    """Head extras of a class-map task: its class list (default: the task's own)."""

    model_config = ConfigDict(extra="forbid")

    classes: list[str] | None = Field(
        None,
        min_length=1,
        description="class names (default: the task's list, e.g. the 19 Cityscapes classes); "
        "an image set maps its labels onto them with `data.sets.<set>.remap`",
    )


@TASKS.register("semantic")
class SemanticTask(DenseTask):
    """Per-pixel classification into SEMANTIC_CLASSES, or the configured class list (255 =
    ignore)."""

    name = "semantic"
    group = "segmentation"
    metric = "mIoU"
    classes: tuple[str, ...] = SEMANTIC_CLASSES
    target_field = "semantic"
    Extras = ClassListOptions

    def __init__(self, config: TaskConfig | None = None) -> None:
        super().__init__(config)
        if self.options.classes is not None:
            self.classes = tuple(self.options.classes)

    def branches(self) -> dict[str, int]:
        """One logits branch with a channel per class."""
        return {"logits": len(self.classes)}

    def pixel_loss(self, outputs: dict[str, Tensor], batch: Batch) -> Tensor:
        """Cross entropy over labelled samples' non-ignored pixels."""
        selected, mask = self.select(outputs, batch)
        if not bool(mask.any()):
            return zero_loss(batch.images.device)
        target = self.target(batch, self.target_field, mask, selected["logits"].device)
        return cross_entropy(selected["logits"], target)

    def domain_map(self, outputs: dict[str, Tensor], batch: Batch) -> Tensor:
        """AdvEnt's weighted self-information -p log p of the softmax, [B, classes, h, w]."""
        log_p = self.family.decode(outputs, batch)["logits"].float().log_softmax(dim=1)
        return -log_p.exp() * log_p

    def predictions(self, outputs: dict[str, Tensor], batch: Batch) -> list[FramePrediction]:
        """Class map (argmax of the upsampled probabilities) and its confidence, per sample."""
        probs = outputs["logits"].detach().float().softmax(dim=1)
        predictions = self.new_predictions(batch)
        for pred, p in zip(predictions, self.to_original(probs, batch), strict=True):
            confidence, labels = p.max(dim=0)
            self.assign(pred, labels, confidence)
        return predictions

    def assign(self, pred: FramePrediction, labels: Tensor, confidence: Tensor) -> None:
        """Store the decoded map in the prediction field of this task."""
        pred.semantic = labels
        pred.semantic_confidence = confidence
