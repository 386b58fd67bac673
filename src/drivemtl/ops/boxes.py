"""Axis-aligned box utilities in (x1, y1, x2, y2) pixel coordinates.

Boxes are tensors whose last dimension is 4. Areas use ``(x2 - x1) * (y2 - y1)`` (no ``+1``), the
convention of torchvision and COCO-style evaluation.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

# Largest log-scale a decoded width / height may take: exp(4.135) = 1000 / 16 (torchvision's value).
DEFAULT_SCALE_CLAMP = math.log(1000.0 / 16)


def _check_boxes(boxes: Tensor, name: str = "boxes") -> None:
    if boxes.shape[-1] != 4:
        raise ValueError(
            f"{name}: expected last dimension 4 (x1, y1, x2, y2), got {tuple(boxes.shape)}"
        )


def box_area(boxes: Tensor) -> Tensor:
    """Area of each box ``[..., 4] -> [...]``; degenerate boxes (x2 < x1) give negative area."""
    _check_boxes(boxes)
    return (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])


def _pairwise_inter_union(boxes1: Tensor, boxes2: Tensor) -> tuple[Tensor, Tensor]:
    area1 = box_area(boxes1)
    area2 = box_area(boxes2)
    top_left = torch.maximum(boxes1[:, None, :2], boxes2[None, :, :2])
    bottom_right = torch.minimum(boxes1[:, None, 2:], boxes2[None, :, 2:])
    wh = (bottom_right - top_left).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    union = area1[:, None] + area2[None, :] - inter
    return inter, union


def box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """Pairwise intersection-over-union ``[N, 4] x [M, 4] -> [N, M]``."""
    _check_boxes(boxes1, "boxes1")
    _check_boxes(boxes2, "boxes2")
    inter, union = _pairwise_inter_union(boxes1, boxes2)
    return inter / union


def generalized_box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """Pairwise generalised IoU (Rezatofighi et al. 2019) ``[N, 4] x [M, 4] -> [N, M]`` in [-1, 1].

    Boxes must be well formed (x2 >= x1, y2 >= y1); used by set-prediction losses (Sparse R-CNN).
    """
    _check_boxes(boxes1, "boxes1")
    _check_boxes(boxes2, "boxes2")
    for name, b in (("boxes1", boxes1), ("boxes2", boxes2)):
        if not bool((b[:, 2:] >= b[:, :2]).all()):
            raise ValueError(f"generalized_box_iou: {name} has boxes with x2 < x1 or y2 < y1")
    inter, union = _pairwise_inter_union(boxes1, boxes2)
    iou = inter / union
    top_left = torch.minimum(boxes1[:, None, :2], boxes2[None, :, :2])
    bottom_right = torch.maximum(boxes1[:, None, 2:], boxes2[None, :, 2:])
    wh = (bottom_right - top_left).clamp(min=0)
    hull = wh[..., 0] * wh[..., 1]
    return iou - (hull - union) / hull


def clip_boxes(boxes: Tensor, size: tuple[int, int]) -> Tensor:
    """Clip boxes to an image of ``size = (height, width)``; returns a new tensor."""
    _check_boxes(boxes)
    height, width = size
    x = boxes[..., 0::2].clamp(min=0, max=width)
    y = boxes[..., 1::2].clamp(min=0, max=height)
    return torch.stack((x[..., 0], y[..., 0], x[..., 1], y[..., 1]), dim=-1)


def box_xyxy_to_cxcywh(boxes: Tensor) -> Tensor:
    """Convert (x1, y1, x2, y2) to (centre x, centre y, width, height)."""
    _check_boxes(boxes)
    x1, y1, x2, y2 = boxes.unbind(-1)
    return torch.stack(((x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1), dim=-1)


def box_cxcywh_to_xyxy(boxes: Tensor) -> Tensor:
    """Convert (centre x, centre y, width, height) to (x1, y1, x2, y2)."""
    _check_boxes(boxes)
    cx, cy, w, h = boxes.unbind(-1)
    return torch.stack((cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2), dim=-1)


def encode_boxes(
    reference_boxes: Tensor,
    proposals: Tensor,
    weights: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0),
) -> Tensor:
    """Regression targets (dx, dy, dw, dh) that turn ``proposals`` into ``reference_boxes``.

    R-CNN parameterisation: ``dx = wx * (gx - px) / pw``, ``dw = ww * log(gw / pw)``; both ``[..., 4]``.
    """
    _check_boxes(reference_boxes, "reference_boxes")
    _check_boxes(proposals, "proposals")
    wx, wy, ww, wh = weights
    pw = proposals[..., 2] - proposals[..., 0]
    ph = proposals[..., 3] - proposals[..., 1]
    px = proposals[..., 0] + 0.5 * pw
    py = proposals[..., 1] + 0.5 * ph
    gw = reference_boxes[..., 2] - reference_boxes[..., 0]
    gh = reference_boxes[..., 3] - reference_boxes[..., 1]
    gx = reference_boxes[..., 0] + 0.5 * gw
    gy = reference_boxes[..., 1] + 0.5 * gh
    return torch.stack(
        (
            wx * (gx - px) / pw,
            wy * (gy - py) / ph,
            ww * torch.log(gw / pw),
            wh * torch.log(gh / ph),
        ),
        dim=-1,
    )


def decode_boxes(
    deltas: Tensor,
    boxes: Tensor,
    weights: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0),
    clamp: float = DEFAULT_SCALE_CLAMP,
) -> Tensor:
    """Apply (dx, dy, dw, dh) ``deltas [..., 4k]`` to ``boxes [..., 4]``; inverse of encode_boxes.

    ``dw, dh`` are clamped to ``clamp`` before ``exp`` so early, wild predictions cannot overflow.
    With ``k > 1`` (class-specific regression) every group of four is applied to the same box.
    """
    _check_boxes(boxes)
    if deltas.shape[-1] % 4 != 0:
        raise ValueError(
            f"decode_boxes: deltas last dimension must be a multiple of 4, got {tuple(deltas.shape)}"
        )
    groups = deltas.shape[-1] // 4
    deltas = deltas.reshape(*deltas.shape[:-1], groups, 4)
    boxes = boxes.to(deltas.dtype).unsqueeze(-2)
    wx, wy, ww, wh = weights
    widths = boxes[..., 2] - boxes[..., 0]
    heights = boxes[..., 3] - boxes[..., 1]
    ctr_x = boxes[..., 0] + 0.5 * widths
    ctr_y = boxes[..., 1] + 0.5 * heights
    dx = deltas[..., 0] / wx
    dy = deltas[..., 1] / wy
    dw = (deltas[..., 2] / ww).clamp(max=clamp)
    dh = (deltas[..., 3] / wh).clamp(max=clamp)
    pred_ctr_x = dx * widths + ctr_x
    pred_ctr_y = dy * heights + ctr_y
    pred_w = torch.exp(dw) * widths
    pred_h = torch.exp(dh) * heights
    out = torch.stack(
        (
            pred_ctr_x - 0.5 * pred_w,
            pred_ctr_y - 0.5 * pred_h,
            pred_ctr_x + 0.5 * pred_w,
            pred_ctr_y + 0.5 * pred_h,
        ),
        dim=-1,
    )
    return out.reshape(*out.shape[:-2], groups * 4)
