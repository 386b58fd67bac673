"""EPE and KITTI's Fl-all of `FlowEvaluator` against hand-counted pixels."""

from __future__ import annotations

import math

import numpy as np
import pytest

from drivemtl.evaluation.flow import FlowEvaluator


def test_epe_and_fl_all_count_the_outliers() -> None:
    gt = np.zeros((2, 1, 4))
    gt[0] = [[0.0, 10.0, 100.0, 2.0]]
    pred = gt.copy()
    pred[0, 0, 0] = 4.0  # error 4 > 3 px (gt length 0): outlier
    pred[0, 0, 1] = 14.0  # error 4 > 3 px and > 5 % of 10: outlier
    pred[0, 0, 2] = 104.0  # error 4 <= 5 % of 100: not an outlier
    pred[0, 0, 3] = 2.0 + 3.0  # error exactly 3 px: not an outlier
    ev = FlowEvaluator()
    ev.add_flow(gt, pred)
    m = ev.compute()
    assert m["EPE"] == pytest.approx((4 + 4 + 4 + 3) / 4)
    assert m["Fl-all"] == pytest.approx(50.0)
    other = FlowEvaluator()
    other.add_flow(gt, pred, valid=np.array([[True, False, False, False]]))
    ev.merge(other)
    assert ev.compute()["Fl-all"] == pytest.approx(100 * 3 / 5)
    assert math.isnan(FlowEvaluator().compute()["Fl-all"])
