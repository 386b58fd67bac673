"""Image tagging: weather (7), scene (7) and time of day (4) of BDD100K, one classifier each."""

from __future__ import annotations

import torch
from pydantic import Field
from torch import Tensor, nn

from drivemtl.models.heads import HEADS
from drivemtl.models.heads.features import FeatureSpec
from drivemtl.structures.batch import Batch
from drivemtl.structures.bdd import TAG_ATTRIBUTES
from drivemtl.structures.predictions import FramePrediction
from drivemtl.tasks.base import TASKS, HeadOptions, Task, empty_predictions, zero_loss
from drivemtl.tasks.losses import cross_entropy


class TaggingOptions(HeadOptions):
    """Global-pool classifier on C5."""

    type: str = "global_pool"
    dropout: float = Field(0.0, ge=0.0, lt=1.0)


@TASKS.register("tagging")
class TaggingTask(Task):
    """Three image-level classifications; target `Batch.tags` [B, 3] with 255 = unknown."""

    name = "tagging"
    group = "classification"
    fields = ("tags",)
    metric = "accuracy"
    Options = TaggingOptions

    def build_head(self, spec: FeatureSpec) -> nn.Module:
        """A linear classifier per attribute on globally pooled C5."""
        attributes = {name: len(values) for name, values in TAG_ATTRIBUTES.items()}
        return HEADS.get(self.options.type)(spec, attributes, dropout=self.options.dropout)

    def loss(self, outputs: dict[str, Tensor], batch: Batch) -> Tensor:
        """Sum over attributes of the CE of labelled samples whose value is known."""
        mask = self.labeled(batch)
        if not bool(mask.any()) or batch.tags is None:
            if bool(mask.any()):
                raise ValueError("task 'tagging': labelled samples but the batch has no tags")
            return zero_loss(batch.images.device)
        tags = batch.tags[mask]
        total = zero_loss(batch.images.device)
        for column, name in enumerate(TAG_ATTRIBUTES):
            logits = outputs[name][mask.to(outputs[name].device)]
            total = total + cross_entropy(logits, tags[:, column].to(logits.device))
        return total

    def postprocess(self, outputs: dict[str, Tensor], batch: Batch) -> list[FramePrediction]:
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
