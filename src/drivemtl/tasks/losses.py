"""Loss functions shared by the dense tasks: masked cross entropy, berHu, 1 - cos, balanced BCE.

Each takes predictions and targets of the labelled samples only and returns a scalar; when nothing
is valid (every pixel ignored) it returns an exact zero that sends no gradient.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from drivemtl.structures.bdd import IGNORE_INDEX


def _zero(like: Tensor) -> Tensor:
    return torch.zeros((), device=like.device, dtype=like.dtype)


def cross_entropy(
    logits: Tensor,
    target: Tensor,
    class_weight: Tensor | None = None,
    ignore_index: int = IGNORE_INDEX,
) -> Tensor:
    """Per-pixel (or per-sample) CE averaged over non-ignored targets (weighted mean with weights)."""
    if not bool((target != ignore_index).any()):
        return _zero(logits)
    return F.cross_entropy(logits, target, weight=class_weight, ignore_index=ignore_index)


def masked_mean(values: Tensor, valid: Tensor) -> Tensor:
    """Mean of `values` where `valid`, as a masked sum: no boolean gather forward, no scatter
    backward. Callers mask their inputs too, so NaN / Inf outside `valid` reach neither the value
    nor the gradient."""
    return torch.where(valid, values, 0.0).sum() / valid.sum()


def berhu(pred: Tensor, target: Tensor, valid: Tensor, threshold: float = 0.2) -> Tensor:
    """Reverse Huber loss (Laina et al. 2016) over valid pixels.

    L = |e| if |e| <= c else (e^2 + c^2) / (2c), with c = threshold * max |e| over the batch
    (detached), as in DenseMTL / Laina et al.
    """
    if not bool(valid.any()):
        return _zero(pred)
    err = torch.where(valid, pred - target, 0.0).abs()
    c = (threshold * err.max()).detach().clamp(min=1e-6)
    quadratic = (err**2 + c**2) / (2 * c)
    return masked_mean(torch.where(err <= c, err, quadratic), valid)


def l1(pred: Tensor, target: Tensor, valid: Tensor) -> Tensor:
    """Mean absolute error over valid pixels."""
    if not bool(valid.any()):
        return _zero(pred)
    return masked_mean(torch.where(valid, pred - target, 0.0).abs(), valid)


def cosine_loss(pred: Tensor, target: Tensor, valid: Tensor, eps: float = 1e-8) -> Tensor:
    """Mean of 1 - cos(pred, target) over valid pixels; pred, target [B, 3, H, W], valid [B, H, W].

    cos = p.t / sqrt(max(|p|^2 |t|^2, eps^2)) as `F.cosine_similarity`, written out over the
    three channels: the library's strided norm over dim 1 is an order of magnitude slower on CPU.
    """
    if not bool(valid.any()):
        return _zero(pred)
    pred = torch.where(valid[:, None], pred, 0.0)  # no gradient path through invalid pixels
    dot = (pred * target).sum(dim=1)
    squares = pred.square().sum(dim=1) * target.square().sum(dim=1)
    cos = dot * squares.clamp(min=eps * eps).rsqrt()
    return masked_mean(1.0 - cos, valid)


def balanced_bce(logits: Tensor, target: Tensor, ignore_index: int = IGNORE_INDEX) -> Tensor:
    """Class-balanced binary CE (HED, Xie & Tu 2015), balanced per image.

    Positives are weighted by |Y-| / |Y| and negatives by |Y+| / |Y| of their own image; the loss is
    the weighted sum divided by the number of valid pixels. logits, target: [B, H, W].
    """
    valid = target != ignore_index
    if not bool(valid.any()):
        return _zero(logits)
    positive = (target == 1) & valid
    negative = (target == 0) & valid
    n_pos = positive.flatten(1).sum(1).to(logits.dtype).view(-1, 1, 1)
    n_neg = negative.flatten(1).sum(1).to(logits.dtype).view(-1, 1, 1)
    total = (n_pos + n_neg).clamp(min=1)
    weight = torch.where(positive, n_neg / total, n_pos / total) * valid
    per_pixel = F.binary_cross_entropy_with_logits(
        logits, positive.to(logits.dtype), reduction="none"
    )
    return (weight * per_pixel).sum() / valid.sum()
