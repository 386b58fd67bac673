"""Greedy non-maximum suppression, exact, in pure PyTorch (torchvision kernels when available).

The sweep works on score-sorted blocks: a block is first checked against every box kept so far
(one vectorised IoU), then resolved greedily inside itself. The result is identical to the
textbook one-box-at-a-time loop but needs only O(block x kept) memory, so thousands of boxes
run in milliseconds. A box is suppressed when its IoU with a kept box is strictly greater than
the threshold (torchvision's rule); ties in score keep the lower index first.
"""

from __future__ import annotations

import torch
from torch import Tensor

from drivemtl.ops._dispatch import use_torchvision
from drivemtl.ops.boxes import box_iou

_BLOCK = 256


def _check_inputs(boxes: Tensor, scores: Tensor) -> None:
    if boxes.dim() != 2 or boxes.shape[-1] != 4:
        raise ValueError(f"nms: boxes must be [N, 4], got {tuple(boxes.shape)}")
    if scores.shape != boxes.shape[:1]:
        raise ValueError(f"nms: scores must be [N] matching boxes, got {tuple(scores.shape)}")


def _greedy_sorted(boxes: Tensor, iou_threshold: float) -> Tensor:
    """Greedy NMS over boxes already sorted by descending score; returns kept positions."""
    n = boxes.shape[0]
    kept: list[int] = []
    kept_boxes = boxes[:0]
    for start in range(0, n, _BLOCK):
        block = boxes[start : start + _BLOCK]
        if kept:
            suppressed = (box_iou(block, kept_boxes) > iou_threshold).any(dim=1)
        else:
            suppressed = torch.zeros(block.shape[0], dtype=torch.bool, device=boxes.device)
        overlaps = (box_iou(block, block) > iou_threshold).cpu().numpy()
        suppressed_np = suppressed.cpu().numpy().copy()
        block_kept: list[int] = []
        for i in range(block.shape[0]):
            if suppressed_np[i]:
                continue
            block_kept.append(i)
            suppressed_np[i + 1 :] |= overlaps[i, i + 1 :]
        if block_kept:
            kept.extend(start + i for i in block_kept)
            index = torch.as_tensor(block_kept, dtype=torch.long, device=boxes.device)
            kept_boxes = torch.cat((kept_boxes, block[index]))
    return torch.as_tensor(kept, dtype=torch.long, device=boxes.device)


def nms(boxes: Tensor, scores: Tensor, iou_threshold: float, impl: str = "auto") -> Tensor:
    """Indices of boxes kept by greedy NMS, sorted by descending score.

    ``boxes [N, 4]`` in (x1, y1, x2, y2), ``scores [N]``. ``impl``: "auto" uses torchvision's kernel
    when it imports, "torch" forces the pure implementation.
    """
    _check_inputs(boxes, scores)
    tv_ops = use_torchvision(impl)
    if tv_ops is not None:
        return tv_ops.nms(boxes, scores, float(iou_threshold))
    if boxes.shape[0] == 0:
        return torch.empty(0, dtype=torch.long, device=boxes.device)
    order = torch.sort(scores, descending=True, stable=True).indices
    with torch.no_grad():
        kept = _greedy_sorted(boxes.detach()[order], float(iou_threshold))
    return order[kept]


def batched_nms(
    boxes: Tensor, scores: Tensor, idxs: Tensor, iou_threshold: float, impl: str = "auto"
) -> Tensor:
    """Class-aware NMS: boxes only suppress boxes with the same ``idxs`` (e.g. class or image id).

    Runs one greedy NMS per category (cheaper than one big IoU matrix for thousands of boxes);
    returns kept indices sorted by descending score.
    """
    _check_inputs(boxes, scores)
    if idxs.shape != scores.shape:
        raise ValueError(f"batched_nms: idxs must be [N] matching boxes, got {tuple(idxs.shape)}")
    tv_ops = use_torchvision(impl)
    if tv_ops is not None:
        return tv_ops.batched_nms(boxes, scores, idxs, float(iou_threshold))
    if boxes.shape[0] == 0:
        return torch.empty(0, dtype=torch.long, device=boxes.device)
    order = torch.sort(scores, descending=True, stable=True).indices
    sorted_boxes = boxes.detach()[order]
    sorted_idxs = idxs[order]
    keep_sorted: list[Tensor] = []
    with torch.no_grad():
        for category in torch.unique(sorted_idxs):
            members = torch.nonzero(sorted_idxs == category).squeeze(1)
            kept = _greedy_sorted(sorted_boxes[members], float(iou_threshold))
            keep_sorted.append(members[kept])
    positions = torch.sort(torch.cat(keep_sorted)).values
    return order[positions]
