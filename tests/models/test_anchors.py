"""Anchor generation, IoU matching and sampling against hand-computed cases."""

from __future__ import annotations

import math

import torch

from drivemtl.models.heads.anchors import (
    BACKGROUND,
    IGNORED,
    AnchorGenerator,
    match_boxes,
    sample_matches,
)


def test_anchor_shapes_and_positions() -> None:
    gen = AnchorGenerator(sizes=(8, 16), ratios=(0.5, 1.0, 2.0), strides=(4, 8))
    level0, level1 = gen([(2, 3), (1, 2)], torch.device("cpu"))
    assert level0.shape == (2 * 3 * 3, 4) and level1.shape == (1 * 2 * 3, 4)
    # cell (y=1, x=2) of level 0, ratio 1: centred at (8, 4), size 8
    assert torch.allclose(level0[(1 * 3 + 2) * 3 + 1], torch.tensor([4.0, 0.0, 12.0, 8.0]))
    # ratio 2 (h / w = 2) keeps the area: w = 16 / sqrt(2), h = 16 * sqrt(2)
    w, h = 16 / math.sqrt(2), 16 * math.sqrt(2)
    assert torch.allclose(level1[3 + 2], torch.tensor([8 - w / 2, -h / 2, 8 + w / 2, h / 2]))


def test_match_thresholds_low_quality_and_ignore() -> None:
    gt = torch.tensor([[0.0, 0.0, 10.0, 10.0], [100.0, 100.0, 110.0, 110.0]])
    boxes = torch.tensor(
        [
            [0.0, 0.0, 10.0, 10.0],  # IoU 1 with gt 0
            [0.0, 0.0, 10.0, 5.0],  # IoU 0.5 -> between thresholds
            [50.0, 50.0, 60.0, 60.0],  # nothing
            [100.0, 100.0, 110.0, 120.0],  # IoU 0.5 with gt 1: its best anchor
        ]
    )
    matched = match_boxes(boxes, gt, high=0.7, low=0.3)
    assert matched.tolist() == [0, IGNORED, BACKGROUND, IGNORED]
    matched = match_boxes(boxes, gt, high=0.7, low=0.3, allow_low_quality=True)
    assert matched.tolist() == [0, IGNORED, BACKGROUND, 1]
    crowd = torch.tensor([False, True])
    matched = match_boxes(boxes, gt, high=0.7, low=0.3, allow_low_quality=True, gt_ignore=crowd)
    assert matched.tolist() == [0, IGNORED, BACKGROUND, IGNORED]


def test_sampling_respects_fraction() -> None:
    matched = torch.tensor([0, 1, 1, 0, BACKGROUND, BACKGROUND, IGNORED, BACKGROUND])
    pos, neg = sample_matches(matched, batch_size=4, positive_fraction=0.25)
    assert pos.numel() == 1 and neg.numel() == 3
    assert bool((matched[pos] >= 0).all()) and bool((matched[neg] == BACKGROUND).all())
    pos, neg = sample_matches(matched, batch_size=100, positive_fraction=0.5)
    assert pos.numel() == 4 and neg.numel() == 3
