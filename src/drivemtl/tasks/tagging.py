"""Image tagging: weather (7), scene (7) and time of day (4) of BDD100K, one classifier each."""

from __future__ import annotations

import torch
from torch import Tensor

from drivemtl.structures.batch import Batch
from drivemtl.structures.bdd import TAG_ATTRIBUTES
from drivemtl.structures.predictions import FramePrediction
from drivemtl.tasks.base import TASKS, Task, empty_predictions


@TASKS.register("tagging")
class TaggingTask(Task):
    """Three image-level classifications; target `Batch.tags` [B, 3] with 255 = unknown."""

    name = "tagging"
    group = "classification"
    kind = "image"
    metric = "accuracy"
    default_head = "global_pool"

    def attributes(self) -> dict[str, int]:
        """Attribute name -> class count, in the column order of the targets."""
        return {name: len(values) for name, values in TAG_ATTRIBUTES.items()}

    def targets(self, batch: Batch) -> Tensor:
        """[B, 3] class indices per attribute (255 = unknown) of the batch."""
        if batch.tags is None:
            raise ValueError("task 'tagging': labelled samples but the batch has no tags")
        return batch.tags

    def predictions(self, outputs: dict[str, Tensor], batch: Batch) -> list[FramePrediction]:
        """Per sample: [3] class indices and their probabilities (weather, scene, timeofday)."""
        probs = [outputs[name].detach().float().softmax(dim=1) for name in TAG_ATTRIBUTES]
        scores, classes = zip(*(p.max(dim=1) for p in probs), strict=True)
        score = torch.stack(scores, dim=1)
        index = torch.stack(classes, dim=1)
        predictions = empty_predictions(batch)
        for i, pred in enumerate(predictions):
            pred.tags = index[i]
            pred.tag_scores = score[i]
        return predictions
