"""Semantic edges (DenseMTL): per-pixel edge probability, class-balanced binary cross entropy."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from drivemtl.structures.batch import Batch
from drivemtl.structures.predictions import FramePrediction
from drivemtl.tasks.base import TASKS, zero_loss
from drivemtl.tasks.dense import DenseTask
from drivemtl.tasks.losses import balanced_bce


@TASKS.register("edges")
class EdgesTask(DenseTask):
    """Binary edge map; target [B, H, W] in {0, 1, 255 = ignore}."""

    name = "edges"
    group = "geometry"
    metric = "F1"

    def branches(self) -> dict[str, int]:
        """One logit channel."""
        return {"logits": 1}

    def pixel_loss(self, outputs: dict[str, Tensor], batch: Batch) -> Tensor:
        """HED class-balanced BCE over the labelled samples."""
        selected, mask = self.select(outputs, batch)
        if not bool(mask.any()):
            return zero_loss(batch.images.device)
        target = self.target(batch, "edges", mask, selected["logits"].device)
        return balanced_bce(selected["logits"][:, 0], target)

    def domain_map(self, outputs: dict[str, Tensor], batch: Batch) -> Tensor:
        """Binary self-information -p log p - (1 - p) log(1 - p) of the edge probability."""
        logits = self.family.decode(outputs, batch)["logits"].float()
        p, log_p, log_q = logits.sigmoid(), F.logsigmoid(logits), F.logsigmoid(-logits)
        return -(p * log_p + (1 - p) * log_q)

    def predictions(self, outputs: dict[str, Tensor], batch: Batch) -> list[FramePrediction]:
        """[H, W] edge probability per sample."""
        probs = outputs["logits"].detach().float().sigmoid()
        predictions = self.new_predictions(batch)
        for pred, p in zip(predictions, self.to_original(probs, batch), strict=True):
            pred.edges = p[0]
        return predictions
