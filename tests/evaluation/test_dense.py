"""Tagging, depth, normals, edges and flow metrics on hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from drivemtl.evaluation.depth import DepthEvaluator
from drivemtl.evaluation.edges import EdgesEvaluator
from drivemtl.evaluation.flow import FlowEvaluator, warp_nearest
from drivemtl.evaluation.normals import NormalsEvaluator
from drivemtl.evaluation.tagging import TaggingEvaluator


def test_tagging_accuracy_skips_unknown() -> None:
    ev = TaggingEvaluator()
    ev.add(np.array([[2, 4, 0], [1, 255, 0]]), np.array([[2, 1, 0], [0, 3, 0]]))
    m = ev.compute()
    assert (m["acc/weather"], m["acc/scene"], m["acc/timeofday"]) == (50.0, 0.0, 100.0)
    assert math.isnan(TaggingEvaluator().compute()["acc"])


def test_depth_metrics() -> None:
    ev = DepthEvaluator()
    ev.add(np.array([2.0, 4.0, 0.0]), np.array([1.0, 4.0, 7.0]))  # third pixel invalid
    m = ev.compute()
    assert m["AbsRel"] == pytest.approx((0.5 + 0) / 2)
    assert m["SqRel"] == pytest.approx((1 / 2) / 2)
    assert m["RMSE"] == pytest.approx(math.sqrt(0.5))
    assert m["RMSE_log"] == pytest.approx(math.sqrt(math.log(2) ** 2 / 2))
    assert (m["delta1"], m["delta2"], m["delta3"]) == (50.0, 50.0, 50.0)  # 2 > 1.25**3
    scaled = DepthEvaluator(median_scaling=True)
    scaled.add(np.array([2.0, 4.0]), np.array([1.0, 2.0]))
    assert scaled.compute()["AbsRel"] == pytest.approx(0.0)


def test_normals_angles() -> None:
    ev = NormalsEvaluator()
    gt = np.array([[0, 0, 0], [0, 0, 0], [1, 1, 0]], float).reshape(3, 1, 3)
    pred = np.array([[0, 1, 5], [0, 0, 0], [1, 1, 0]], float).reshape(3, 1, 3)
    ev.add(gt, pred)
    m = ev.compute()
    assert m["mean"] == pytest.approx(22.5)  # 0 and 45 degrees; third pixel invalid
    assert m["11.25"] == 50.0 and m["30"] == 50.0


def test_edges_f1() -> None:
    ev = EdgesEvaluator()
    ev.add(np.array([1, 1, 0, 0, 255]), np.array([0.9, 0.1, 0.8, 0.2, 0.9]))
    m = ev.compute()
    assert (m["precision"], m["recall"], m["F1"]) == (50.0, 50.0, 50.0)


def test_flow_warp_and_epe() -> None:
    ids_t = np.zeros((4, 4), int)
    ids_t[1, 1] = 5
    ids_t1 = np.zeros((4, 4), int)
    ids_t1[1, 2] = 5  # object moved one pixel right
    flow = np.zeros((2, 4, 4))
    flow[0] = 1.0
    assert warp_nearest(ids_t1, flow)[1, 1] == 5
    assert warp_nearest(ids_t1, flow)[0, 3] == -1  # sampled outside the image
    ev = FlowEvaluator()
    ev.add_masks(ids_t, ids_t1, flow)
    ev.add_flow(flow, np.zeros_like(flow))
    m = ev.compute()
    assert m["mIoU"] == 100.0 and m["EPE"] == pytest.approx(1.0)
