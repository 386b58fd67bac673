"""Confusion-matrix metrics on hand-computed maps (official fast_hist case included)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from drivemtl.evaluation.segmentation import (
    DrivableEvaluator,
    SegmentationEvaluator,
    confusion_matrix,
)
from drivemtl.structures.batch import Batch
from drivemtl.structures.predictions import FramePrediction
from drivemtl.structures.sample import SampleMeta


def test_confusion_matrix_official_case() -> None:
    a = np.zeros((10, 10), np.uint8)
    a[4:, 4:] = 1
    b = np.ones((10, 10), np.uint8) * 2  # 2 is out of range -> "ignored" column
    b[:7, :7] = 0
    hist = confusion_matrix(a, b, 2)
    assert hist[:2, 0].tolist() == [40, 9]
    assert hist[:2, 2].tolist() == [24, 27]


def test_metrics_and_absent_class() -> None:
    ev = SegmentationEvaluator(["a", "b", "c"])
    gt = np.array([[0, 0, 1, 255]])
    pred = np.array([[0, 1, 1, 2]])
    ev.add(gt, pred)
    m = ev.compute()
    assert m["IoU/a"] == pytest.approx(50.0)  # 1 / (2 + 1 - 1)
    assert m["IoU/b"] == pytest.approx(50.0)
    assert m["IoU/c"] == 0.0  # no ground truth: 0 as the toolkit reports it, out of the mean
    assert m["mIoU"] == pytest.approx(50.0)
    assert m["pAcc"] == pytest.approx(200 / 3)
    assert m["Acc/a"] == pytest.approx(100.0)  # toolkit: diag / predicted count
    empty = SegmentationEvaluator(["a"])
    assert math.isnan(empty.compute()["mIoU"])


def test_model_side_drivable_excludes_background() -> None:
    meta = SampleMeta(name="f", image_set="s", orig_size=(2, 2))
    target = torch.tensor([[[0, 1], [2, 2]]])
    batch = Batch(images=torch.zeros(1, 3, 2, 2), image_sizes=[(2, 2)], metas=[meta],
                  labeled={"drivable": torch.tensor([True])}, instances=[None], lane_lines=[None],
                  drivable=target)  # fmt: skip
    pred = FramePrediction(meta=meta, drivable=torch.tensor([[0, 2], [2, 2]]))
    ev = DrivableEvaluator()
    ev.update([pred], batch)
    m = ev.compute()
    assert m["VTD_mIoU"] == pytest.approx(50.0)  # direct 100, alternative 0
    assert m["mIoU"] == pytest.approx((100 + 0 + 200 / 3) / 3)
