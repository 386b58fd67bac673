"""Lane marking segmentation: three per-pixel label groups (category, direction, style).

Each group has a background class 0; foreground pixels weigh `foreground_weight` (10 in VTDNet)
times a background pixel in the cross entropy, to balance the thin markings against the road.
"""

from __future__ import annotations

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor

from drivemtl.structures.batch import Batch
from drivemtl.structures.bdd import LANE_CATEGORIES, LANE_DIRECTIONS, LANE_STYLES
from drivemtl.structures.predictions import FramePrediction
from drivemtl.tasks.base import TASKS, zero_loss
from drivemtl.tasks.dense import DenseTask
from drivemtl.tasks.losses import cross_entropy

# Output groups in the order of the lanes target channels, each with its background class.
LANE_GROUPS: dict[str, int] = {
    "category": len(LANE_CATEGORIES) + 1,
    "direction": len(LANE_DIRECTIONS) + 1,
    "style": len(LANE_STYLES) + 1,
}


class LaneOptions(BaseModel):
    """Lane head extras: the foreground weight of the lane cross entropy."""

    model_config = ConfigDict(extra="forbid")

    foreground_weight: float = Field(10.0, gt=0)


@TASKS.register("lanes")
class LanesTask(DenseTask):
    """Three per-pixel classifications sharing one decoder, one output conv per group."""

    name = "lanes"
    group = "segmentation"
    metric = "F-score"
    Extras = LaneOptions

    def branches(self) -> dict[str, int]:
        """A branch per label group: category (9), direction (3), style (3)."""
        return dict(LANE_GROUPS)

    def pixel_loss(self, outputs: dict[str, Tensor], batch: Batch) -> Tensor:
        """Sum over the groups of the foreground-weighted CE of the labelled samples."""
        selected, mask = self.select(outputs, batch)
        if not bool(mask.any()):
            return zero_loss(batch.images.device)
        target = self.target(batch, "lanes", mask, batch.images.device)
        total = zero_loss(batch.images.device)
        for channel, (group, classes) in enumerate(LANE_GROUPS.items()):
            logits = selected[group]
            weight = torch.full((classes,), self.options.foreground_weight, device=logits.device)
            weight[0] = 1.0
            total = total + cross_entropy(logits, target[:, channel].to(logits.device), weight)
        return total

    def predictions(self, outputs: dict[str, Tensor], batch: Batch) -> list[FramePrediction]:
        """[3, H, W] int64 map (category, direction, style; 0 = background) per sample."""
        predictions = self.new_predictions(batch)
        per_group = [
            self.to_original(outputs[g].detach().float().softmax(dim=1), batch) for g in LANE_GROUPS
        ]
        for i, pred in enumerate(predictions):
            pred.lanes = torch.stack([maps[i].argmax(dim=0) for maps in per_group])
        return predictions
