"""Lane marking segmentation: three per-pixel label groups (category, direction, style).

Each group has a background class 0; foreground pixels weigh `foreground_weight` (10 in VTDNet)
times a background pixel in the cross entropy, to balance the thin markings against the road.

For mask-classification heads (MaskFormer) the three groups are joined into one class map:
class 0 is background (0 in every group) and each (category, direction, style) combination of
foreground values is one class (8 x 2 x 2 = 32); pixels with background in some groups but not
all, or an ignore value in any, are ignored. Joint scores decode back into one distribution per
group by marginalising over the other two.
"""

from __future__ import annotations

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor

from drivemtl.structures.batch import Batch
from drivemtl.structures.bdd import IGNORE_INDEX, LANE_CATEGORIES, LANE_DIRECTIONS, LANE_STYLES
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


def joint_table() -> Tensor:
    """[J, 3] group values (category, direction, style) of every joint class; row 0 background,
    then the foreground combinations with the style varying fastest."""
    foreground = [torch.arange(1, classes) for classes in LANE_GROUPS.values()]
    combos = torch.cartesian_prod(*foreground)
    return torch.cat((torch.zeros((1, len(LANE_GROUPS)), dtype=torch.long), combos))


def encode_joint(target: Tensor) -> Tensor:
    """[n, 3, H, W] group maps -> [n, H, W] joint class map (IGNORE_INDEX where undefined)."""
    sizes = [classes - 1 for classes in LANE_GROUPS.values()]
    joint = torch.zeros_like(target[:, 0])
    for channel, size in enumerate(sizes):
        joint = joint * size + (target[:, channel] - 1)
    joint = joint + 1
    ignored = (target == IGNORE_INDEX).any(dim=1)
    background = (target == 0).all(dim=1)
    foreground = ((target > 0) & (target != IGNORE_INDEX)).all(dim=1)
    joint = torch.where(background, 0, joint)
    return torch.where(ignored | ~(background | foreground), IGNORE_INDEX, joint)


def marginals(scores: Tensor) -> dict[str, Tensor]:
    """Joint class probabilities [B, J, H, W] -> each group's distribution [B, classes, H, W]."""
    table = joint_table().to(scores.device)
    out = {}
    for channel, (group, classes) in enumerate(LANE_GROUPS.items()):
        onehot = torch.nn.functional.one_hot(table[:, channel], classes).to(scores.dtype)
        out[group] = torch.einsum("bjhw,jc->bchw", scores, onehot)
    return out


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

    def supports_class_maps(self) -> bool:
        """The joint class map (module docstring) serves mask-classification heads."""
        return True

    def num_map_classes(self) -> int:
        """Background plus every (category, direction, style) foreground combination: 33."""
        return len(joint_table())

    def class_map_target(self, batch: Batch, mask: Tensor, device: torch.device) -> Tensor:
        """[n, H, W] joint class map of the selected samples (IGNORE_INDEX where undefined)."""
        return encode_joint(self.target(batch, "lanes", mask, device))

    def branch_outputs_from_class_scores(self, scores: Tensor) -> dict[str, Tensor]:
        """Each group's logits: the log of its marginal of the joint probabilities."""
        tiny = torch.finfo(scores.dtype).tiny
        return {g: p.clamp_min(tiny).log() for g, p in marginals(scores).items()}

    def predictions(self, outputs: dict[str, Tensor], batch: Batch) -> list[FramePrediction]:
        """[3, H, W] int64 map (category, direction, style; 0 = background) per sample."""
        predictions = self.new_predictions(batch)
        per_group = [
            self.to_original(outputs[g].detach().float().softmax(dim=1), batch) for g in LANE_GROUPS
        ]
        for i, pred in enumerate(predictions):
            pred.lanes = torch.stack([maps[i].argmax(dim=0) for maps in per_group])
        return predictions
