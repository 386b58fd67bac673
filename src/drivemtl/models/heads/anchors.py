"""Anchors on FPN levels, IoU-based matching of boxes to ground truth, and balanced sampling.

Shared by the RPN (anchors vs ground truth) and the RoI heads (proposals vs ground truth).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from drivemtl.ops.boxes import box_iou

BACKGROUND = -1  # matched index of a box matched to nothing
IGNORED = -2  # matched index of a box neither positive nor negative (between thresholds / crowd)


class AnchorGenerator:
    """One anchor size per FPN level and several aspect ratios (h / w) per location.

    Anchors of level l are centred at (x * stride + offset * stride, y * stride + ...) for every
    feature-map cell, ordered (y, x, ratio) to match a conv head's [A, H, W] output layout.
    """

    def __init__(
        self,
        sizes: tuple[float, ...] = (32, 64, 128, 256, 512),
        ratios: tuple[float, ...] = (0.5, 1.0, 2.0),
        strides: tuple[int, ...] = (4, 8, 16, 32, 64),
        offset: float = 0.0,
    ) -> None:
        if len(sizes) != len(strides):
            raise ValueError(
                f"one anchor size per level: {len(sizes)} sizes, {len(strides)} levels"
            )
        self.sizes = tuple(float(s) for s in sizes)
        self.ratios = tuple(float(r) for r in ratios)
        self.strides = tuple(int(s) for s in strides)
        self.offset = float(offset)

    @property
    def num_anchors(self) -> int:
        """Anchors per feature-map location."""
        return len(self.ratios)

    def cell_anchors(self, size: float) -> Tensor:
        """[A, 4] anchors of area size^2 and the configured ratios, centred on the origin."""
        rows = []
        for ratio in self.ratios:
            w = size / math.sqrt(ratio)
            h = size * math.sqrt(ratio)
            rows.append((-w / 2, -h / 2, w / 2, h / 2))
        return torch.tensor(rows, dtype=torch.float32)

    def __call__(self, grid_sizes: list[tuple[int, int]], device: torch.device) -> list[Tensor]:
        """Per level [H * W * A, 4] anchors in input pixels for feature maps of `grid_sizes`."""
        if len(grid_sizes) != len(self.strides):
            raise ValueError(f"expected {len(self.strides)} feature maps, got {len(grid_sizes)}")
        anchors = []
        for (height, width), stride, size in zip(grid_sizes, self.strides, self.sizes, strict=True):
            shift_x = (
                torch.arange(width, device=device, dtype=torch.float32) + self.offset
            ) * stride
            shift_y = (
                torch.arange(height, device=device, dtype=torch.float32) + self.offset
            ) * stride
            yy, xx = torch.meshgrid(shift_y, shift_x, indexing="ij")
            shifts = torch.stack((xx, yy, xx, yy), dim=-1).reshape(-1, 1, 4)
            cell = self.cell_anchors(size).to(device)
            anchors.append((shifts + cell[None]).reshape(-1, 4))
        return anchors


def match_boxes(
    boxes: Tensor,
    gt_boxes: Tensor,
    high: float,
    low: float,
    allow_low_quality: bool = False,
    gt_ignore: Tensor | None = None,
) -> Tensor:
    """Index of the matched ground truth for each of `boxes` [N, 4] (or BACKGROUND / IGNORED).

    IoU >= high: positive; IoU < low: background; in between: ignored. With `allow_low_quality`,
    every box achieving a ground truth's highest IoU is positive too (RPN rule). Boxes overlapping
    an ignore region (`gt_ignore`) by IoU >= low are ignored rather than background.
    """
    n = boxes.shape[0]
    matched = torch.full((n,), BACKGROUND, dtype=torch.int64, device=boxes.device)
    if gt_boxes.shape[0] == 0 or n == 0:
        return matched
    ignore = (
        gt_ignore.to(torch.bool)
        if gt_ignore is not None
        else torch.zeros(gt_boxes.shape[0], dtype=torch.bool, device=boxes.device)
    )
    iou = box_iou(gt_boxes, boxes)  # [G, N]
    if bool(ignore.any()):
        near_ignore = (iou[ignore] >= low).any(dim=0)
        iou = iou.clone()
        iou[ignore] = -1.0
    else:
        near_ignore = torch.zeros(n, dtype=torch.bool, device=boxes.device)
    best_iou, best_gt = iou.max(dim=0)
    matched = torch.where(best_iou >= high, best_gt, matched)
    between = (best_iou >= low) & (best_iou < high)
    matched[between | ((best_iou < low) & near_ignore)] = IGNORED
    if allow_low_quality:
        valid_gt = ~ignore
        highest = iou.max(dim=1).values  # [G]
        hits = (iou == highest[:, None]) & (highest[:, None] > 0) & valid_gt[:, None]
        box_index = torch.nonzero(hits, as_tuple=True)[1]
        matched[box_index] = best_gt[box_index]
    return matched


def sample_matches(
    matched: Tensor,
    batch_size: int,
    positive_fraction: float,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """Random positive / negative subsets (index tensors) of a match vector, Faster R-CNN style.

    At most `batch_size * positive_fraction` positives (matched >= 0); negatives (BACKGROUND) fill
    the rest of `batch_size`.
    """
    positive = torch.nonzero(matched >= 0).squeeze(1)
    negative = torch.nonzero(matched == BACKGROUND).squeeze(1)
    num_pos = min(positive.numel(), int(batch_size * positive_fraction))
    num_neg = min(negative.numel(), batch_size - num_pos)
    device = matched.device
    pos = positive[torch.randperm(positive.numel(), generator=generator).to(device)[:num_pos]]
    neg = negative[torch.randperm(negative.numel(), generator=generator).to(device)[:num_neg]]
    return pos, neg
