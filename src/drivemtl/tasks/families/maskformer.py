"""The MaskFormer family: mask classification with a set criterion, for class-map dense tasks.

Targets are semantic-segmentation MaskFormer's: per labelled image, one binary mask per class
present in the task's class map (`task.class_map_target`, 255 = ignore). Each supervised decoder
layer (the final one and, with deep supervision, every earlier one) is matched per image with the
Hungarian algorithm on class 1 x (-p(class)) + mask focal 20 + dice 1, computed on the stride-4
predictions against the nearest-downsampled targets (as the reference matcher), and trained with
cross entropy over K + 1 classes (no-object weight 0.1) plus mask focal (20) and dice (1) losses
on the matched masks bilinearly upsampled to the target resolution (the padded input), averaged
over the number of target masks in the batch. Ignored pixels take part in neither costs nor mask
losses. Decoding is the reference's semantic inference, sum_q softmax(class)[:-1] sigmoid(mask),
normalised over classes and handed to the task as branch maps (`branch_outputs_from_class_scores`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from pydantic import Field, ValidationInfo, field_validator
from torch import Tensor, nn

from drivemtl.config.loader import ConfigError
from drivemtl.models.features import FeatureSpec
from drivemtl.models.heads.maskformer import MaskFormerHead, MaskFormerOutputs
from drivemtl.ops.matching import hungarian_match
from drivemtl.ops.set_losses import (
    dice_loss,
    pairwise_dice_cost,
    pairwise_mask_focal_cost,
    sigmoid_focal_loss,
)
from drivemtl.structures.batch import Batch
from drivemtl.structures.bdd import IGNORE_INDEX
from drivemtl.tasks.base import zero_loss
from drivemtl.tasks.dense import rows
from drivemtl.tasks.families.base import HEAD_FAMILIES, HeadFamily, HeadOptions


class MaskFormerOptions(HeadOptions):
    """Options of the MaskFormer head and criterion (defaults: the reference's)."""

    type: str = "maskformer"
    num_queries: int = Field(100, gt=0)
    hidden_dim: int = Field(256, gt=0, description="transformer width (even)")
    nheads: int = Field(8, gt=0, description="attention heads (divide hidden_dim)")
    dim_feedforward: int = Field(2048, gt=0)
    dec_layers: int = Field(6, gt=0)
    mask_dim: int = Field(256, gt=0, description="channels of the per-pixel embeddings")
    conv_dim: int = Field(256, gt=0, description="width of the pixel decoder's convs")
    dropout: float = Field(0.1, ge=0.0, lt=1.0)
    pre_norm: bool = False
    deep_supervision: bool = True
    strides: tuple[int, ...] = (4, 8, 16, 32)
    no_object_weight: float = Field(0.1, ge=0.0)
    class_weight: float = Field(1.0, ge=0.0)
    mask_weight: float = Field(20.0, ge=0.0, description="mask focal loss (and cost) weight")
    dice_weight: float = Field(1.0, ge=0.0)

    @field_validator("hidden_dim")
    @classmethod
    def _even(cls, value: int) -> int:
        if value % 2:
            raise ValueError(f"must be even (sine positional encoding), got {value}")
        return value

    @field_validator("nheads")
    @classmethod
    def _divides(cls, value: int, info: ValidationInfo) -> int:
        hidden = info.data.get("hidden_dim")
        if hidden is not None and hidden % value:
            raise ValueError(f"must divide hidden_dim {hidden}, got {value}")
        return value


@dataclass
class MaskTargets:
    """One image's targets: class per mask [G], binary masks [G, H, W], valid pixels [H, W]."""

    labels: Tensor
    masks: Tensor
    valid: Tensor


def mask_targets(class_map: Tensor, num_classes: int) -> MaskTargets:
    """One binary mask per class present in an [H, W] class map (IGNORE_INDEX excluded)."""
    valid = class_map != IGNORE_INDEX
    labels = torch.unique(class_map[valid])
    if bool((labels >= num_classes).any()) or bool((labels < 0).any()):
        raise ValueError(f"class map values {labels.tolist()} outside 0..{num_classes - 1}")
    masks = (class_map[None] == labels[:, None, None]).float()
    return MaskTargets(labels, masks, valid)


def downsample(targets: MaskTargets, size: tuple[int, int]) -> MaskTargets:
    """Targets resized to `size` with nearest-neighbour sampling (for the matching costs)."""
    if tuple(targets.valid.shape) == tuple(size):
        return targets
    masks = F.interpolate(targets.masks[None], size=size, mode="nearest")[0]
    valid = F.interpolate(targets.valid[None, None].float(), size=size, mode="nearest")[0, 0]
    return MaskTargets(targets.labels, masks, valid > 0.5)


@dataclass(frozen=True)
class LossWeights:
    """Weights of the criterion's terms and of the matching costs."""

    class_weight: float = 1.0
    mask_weight: float = 20.0
    dice_weight: float = 1.0
    no_object_weight: float = 0.1


def match(
    logits: Tensor, masks: Tensor, targets: MaskTargets, weights: LossWeights
) -> tuple[Tensor, Tensor]:
    """Hungarian matching of one image's queries (logits [Q, K+1], masks [Q, h, w]) to its target
    masks: (query indices, target indices), on the valid pixels of the downsampled targets."""
    small = downsample(targets, tuple(masks.shape[-2:]))
    with torch.no_grad():
        valid = small.valid.flatten()
        pred = masks.detach().float().flatten(1)[:, valid]
        tgt = small.masks.flatten(1)[:, valid]
        prob = logits.detach().float().softmax(-1)[:, targets.labels]
        cost = -weights.class_weight * prob
        if pred.shape[1] > 0:
            cost = cost + weights.mask_weight * pairwise_mask_focal_cost(pred, tgt)
            cost = cost + weights.dice_weight * pairwise_dice_cost(pred, tgt)
    return hungarian_match(cost)


def layer_losses(
    logits: Tensor, masks: Tensor, targets: list[MaskTargets], weights: LossWeights
) -> dict[str, Tensor]:
    """CE, mask focal and dice losses (unweighted) of one decoder layer's predictions of the
    labelled images (logits [n, Q, K+1], masks [n, Q, h, w]) against their targets."""
    num_classes = logits.shape[-1] - 1
    classes = torch.full(logits.shape[:2], num_classes, dtype=torch.long, device=logits.device)
    focal = dice = logits.new_zeros((), dtype=torch.float32)
    num_masks = max(sum(len(t.labels) for t in targets), 1)
    for i, target in enumerate(targets):
        queries, index = match(logits[i], masks[i], target, weights)
        classes[i, queries] = target.labels[index]
        if len(queries) == 0:
            continue
        pred = masks[i, queries].float()[None]
        pred = F.interpolate(
            pred, size=target.masks.shape[-2:], mode="bilinear", align_corners=False
        )
        valid = target.valid.flatten()
        pred, tgt = pred[0].flatten(1)[:, valid], target.masks[index].flatten(1)[:, valid]
        if pred.shape[1] == 0:
            continue
        focal = focal + sigmoid_focal_loss(pred, tgt).mean(1).sum()
        dice = dice + dice_loss(pred, tgt).sum()
    class_weight = torch.ones(num_classes + 1, device=logits.device)
    class_weight[-1] = weights.no_object_weight
    ce = F.cross_entropy(logits.float().transpose(1, 2), classes, weight=class_weight)
    return {"ce": ce, "focal": focal / num_masks, "dice": dice / num_masks}


def set_criterion(
    layers: list[tuple[Tensor, Tensor]], targets: list[MaskTargets], weights: LossWeights
) -> Tensor:
    """Weighted sum over the supervised layers of CE + mask focal + dice (deep supervision)."""
    total = layers[-1][0].new_zeros((), dtype=torch.float32)
    for logits, masks in layers:
        parts = layer_losses(logits, masks, targets, weights)
        total = total + weights.class_weight * parts["ce"]
        total = total + weights.mask_weight * parts["focal"] + weights.dice_weight * parts["dice"]
    return total


def semantic_scores(outputs: MaskFormerOutputs) -> Tensor:
    """Sum_q softmax(class)[:-1] sigmoid(mask) at the padded input size, normalised over the
    classes: [B, K, H, W] probabilities."""
    probs = outputs.pred_logits.float().softmax(-1)[..., :-1]
    per_image = []
    for i in range(probs.shape[0]):  # one image at a time: Q full-size masks each
        masks = F.interpolate(
            outputs.pred_masks[i : i + 1].float(),
            size=outputs.input_size,
            mode="bilinear",
            align_corners=False,
        )[0].sigmoid()
        per_image.append(torch.einsum("qk,qhw->khw", probs[i], masks))
    scores = torch.stack(per_image)
    return scores / scores.sum(1, keepdim=True).clamp_min(torch.finfo(scores.dtype).tiny)


@HEAD_FAMILIES.register("maskformer")
class MaskFormerFamily(HeadFamily):
    """MaskFormer head with the set criterion, for dense tasks with a per-pixel class map."""

    Options = MaskFormerOptions
    kinds = ("dense",)

    def __init__(self, task: object, options: MaskFormerOptions) -> None:
        super().__init__(task, options)
        supports = getattr(task, "supports_class_maps", None)
        if supports is None or not supports():
            name = getattr(task, "name", "?")
            raise ConfigError(
                f"model.tasks.{name}.head.type: 'maskformer' needs a task with a per-pixel class "
                f"map (semantic, drivable, lanes ...); task {name!r} has none"
            )
        self.weights = LossWeights(
            options.class_weight, options.mask_weight, options.dice_weight, options.no_object_weight
        )

    def build(self, spec: FeatureSpec) -> nn.Module:
        """The MaskFormer head for the task's class count."""
        o = self.options
        return MaskFormerHead(
            spec,
            num_classes=self.task.num_map_classes(),
            num_queries=o.num_queries,
            hidden_dim=o.hidden_dim,
            nheads=o.nheads,
            dim_feedforward=o.dim_feedforward,
            dec_layers=o.dec_layers,
            mask_dim=o.mask_dim,
            conv_dim=o.conv_dim,
            dropout=o.dropout,
            pre_norm=o.pre_norm,
            deep_supervision=o.deep_supervision,
            strides=tuple(o.strides),
        )

    def targets(self, batch: Batch, mask: Tensor, device: torch.device) -> list[MaskTargets]:
        """Per labelled image, its target masks."""
        class_maps = self.task.class_map_target(batch, mask, device)
        classes = self.task.num_map_classes()
        return [mask_targets(m, classes) for m in class_maps]

    def loss(self, outputs: MaskFormerOutputs, batch: Batch) -> Tensor:
        """The set criterion over the labelled samples; an exact zero if none is labelled."""
        device = outputs.pred_logits.device
        mask = self.task.labeled(batch).to(device)
        if not bool(mask.any()):
            return zero_loss(device)
        layers = [(rows(logits, mask), rows(masks, mask)) for logits, masks in outputs.layers()]
        return set_criterion(layers, self.targets(batch, mask, device), self.weights)

    def decode(self, outputs: MaskFormerOutputs, batch: Batch) -> dict[str, Tensor]:
        """The task's branch maps from the normalised semantic scores (log-probabilities)."""
        return self.task.branch_outputs_from_class_scores(semantic_scores(outputs))
