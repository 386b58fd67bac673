"""Losses and pairwise matching costs of set-prediction heads (MaskFormer, Sparse R-CNN, DETR).

Element-wise sigmoid focal loss (Lin et al. 2017), the dice loss of soft masks (Milletari et al.
2016), and their all-pairs forms [Q, G] that Hungarian matching needs: every query against
every target, computed with matrix products instead of a Q x G loop.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def sigmoid_focal_loss(
    logits: Tensor, targets: Tensor, alpha: float = 0.25, gamma: float = 2.0
) -> Tensor:
    """Element-wise focal loss of `logits` against binary `targets` (same shape), unreduced.

    FL = -alpha_t (1 - p_t)^gamma log p_t, with alpha_t = alpha for positives and 1 - alpha for
    negatives (alpha < 0 disables the weighting).
    """
    p = logits.sigmoid()
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = p * targets + (1 - p) * (1 - targets)
    loss = ce * (1 - p_t) ** gamma
    if alpha >= 0:
        loss = (alpha * targets + (1 - alpha) * (1 - targets)) * loss
    return loss


def dice_loss(logits: Tensor, targets: Tensor) -> Tensor:
    """Per-mask dice loss 1 - (2 sum(p t) + 1) / (sum p + sum t + 1); logits, targets [N, P]."""
    p = logits.sigmoid()
    numerator = 2 * (p * targets).sum(-1)
    return 1 - (numerator + 1) / (p.sum(-1) + targets.sum(-1) + 1)


def pairwise_dice_cost(logits: Tensor, targets: Tensor) -> Tensor:
    """Dice loss of every predicted mask [Q, P] against every target mask [G, P]: [Q, G]."""
    p = logits.sigmoid()
    numerator = 2 * p @ targets.T
    return 1 - (numerator + 1) / (p.sum(-1)[:, None] + targets.sum(-1)[None, :] + 1)


def pairwise_mask_focal_cost(
    logits: Tensor, targets: Tensor, alpha: float = 0.25, gamma: float = 2.0
) -> Tensor:
    """Mean over pixels of the focal loss of every mask [Q, P] against every target [G, P]:
    [Q, G] (the positive and negative terms separate, so two matrix products suffice)."""
    p = logits.sigmoid()
    pos = (1 - p) ** gamma * F.binary_cross_entropy_with_logits(
        logits, torch.ones_like(logits), reduction="none"
    )
    neg = p**gamma * F.binary_cross_entropy_with_logits(
        logits, torch.zeros_like(logits), reduction="none"
    )
    if alpha >= 0:
        pos, neg = pos * alpha, neg * (1 - alpha)
    return (pos @ targets.T + neg @ (1 - targets).T) / logits.shape[-1]


def pairwise_class_focal_cost(
    logits: Tensor, classes: Tensor, alpha: float = 0.25, gamma: float = 2.0
) -> Tensor:
    """Focal classification cost of every query [Q, C] (sigmoid logits) for each target's class
    [G]: [Q, G], the positive focal term minus the negative one at that class (Sparse R-CNN)."""
    p = logits.sigmoid()[:, classes]
    eps = 1e-8
    pos = alpha * (1 - p) ** gamma * -(p + eps).log()
    neg = (1 - alpha) * p**gamma * -(1 - p + eps).log()
    return pos - neg
