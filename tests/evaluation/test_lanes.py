"""Lane F-score cases from the BDD100K toolkit's own tests, and the byte decoding."""

from __future__ import annotations

import numpy as np
import pytest

from drivemtl.evaluation.lanes import LaneEvaluator, boundary_f_score, decode_lane_byte


def test_parallel_lines() -> None:
    a = np.zeros((10, 10), bool)
    b = np.zeros((10, 10), bool)
    a[3, 3:7] = True
    b[7, 3:7] = True
    for radius in (1, 2, 3):
        assert boundary_f_score(a, b, radius) == pytest.approx(0.0)
    for radius in (4, 5, 6):
        assert boundary_f_score(a, b, radius) == pytest.approx(1.0)


def test_perpendicular_lines() -> None:
    a = np.zeros((10, 10), bool)
    b = np.zeros((10, 10), bool)
    a[3, 3:6] = True
    b[5:8, 7] = True
    expected = {2: 0.0, 3: 1 / 3, 4: 2 / 3, 5: 1.0}
    for radius, value in expected.items():
        assert boundary_f_score(a, b, radius) == pytest.approx(value)


def test_byte_decoding_and_empty_prediction() -> None:
    byte = np.array([[0b0010_0110, 0b0000_1000]], np.uint8)  # vertical, solid, category 6; bg
    assert decode_lane_byte(byte, "direction", 1).tolist() == [[True, False]]
    assert decode_lane_byte(byte, "style", 0).tolist() == [[True, False]]
    assert decode_lane_byte(byte, "category", 6).tolist() == [[True, False]]
    ev = LaneEvaluator()
    ev.add_bytes(byte, None)
    m = ev.compute()
    # only vertical / solid / single white have ground truth and score 0; all others are 1
    assert m["F1_pix1/vertical"] == 0.0
    assert m["F1_pix1/parallel"] == 100.0
    assert m["F1_pix1"] == pytest.approx((50 + 50 + 700 / 8) / 3)
