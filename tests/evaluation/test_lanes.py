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
    ev.add_bytes(byte, np.full_like(byte, 0b0000_1000))  # a prediction without lanes
    m = ev.compute()
    # only vertical / solid / single white have ground truth and score 0; all others are 1
    assert m["F1_pix1/vertical"] == 0.0
    assert m["F1_pix1/parallel"] == 100.0
    assert m["F1_pix1"] == pytest.approx((50 + 50 + 700 / 8) / 3)
    # a missing prediction is an all-zero byte map (official): two parallel solid crosswalk
    # pixels. direction 0 / 0, style: solid 1 (adjacent pixels), dashed 1; category: 6 of 8 empty
    missing = LaneEvaluator()
    missing.add_bytes(byte, None)
    m = missing.compute()
    assert m["F1_pix1/DIRECTION"] == 0.0 and m["F1_pix1/STYLE"] == 100.0
    assert m["F1_pix1"] == pytest.approx((0 + 100 + 75) / 3)


# ----------------------------------------------------------------------------- VTD lane IoU
def _reference_vtd_miou(frames: list[tuple[np.ndarray, np.ndarray]], radius: int) -> float:
    """Float64 VTD lane mIoU from the byte encoding, dilating by explicit pixel distances.

    Per attribute value: the ground-truth mask is grown to every pixel within Euclidean
    distance `radius` of a ground-truth pixel; intersection and union with the prediction are
    summed over frames; IoU averaged over values with a non-empty union, then over attributes.
    """
    fields = {"direction": (5, 1, 2), "style": (4, 1, 2), "category": (0, 7, 8)}
    inter: dict[tuple[str, int], float] = {}
    union: dict[tuple[str, int], float] = {}
    for gt, pred in frames:
        h, w = gt.shape
        rows, cols = np.mgrid[0:h, 0:w]
        for name, (shift, mask, count) in fields.items():
            for value in range(count):
                g = ((gt & 8) == 0) & (((gt >> shift) & mask) == value)
                p = ((pred & 8) == 0) & (((pred >> shift) & mask) == value)
                gy, gx = np.nonzero(g)
                if gy.size:
                    d2 = (rows[..., None] - gy) ** 2 + (cols[..., None] - gx) ** 2
                    grown = (d2.min(axis=-1) <= radius**2).astype(np.float64)
                else:
                    grown = np.zeros((h, w))
                i = float((grown * p).sum())
                inter[name, value] = inter.get((name, value), 0.0) + i
                union[name, value] = union.get((name, value), 0.0) + grown.sum() + p.sum() - i
    per_attribute = []
    for name in fields:
        ious = [inter[k] / union[k] for k in union if k[0] == name and union[k] > 0]
        if ious:
            per_attribute.append(100.0 * float(np.mean(ious)))
    return float(np.mean(per_attribute))


def _bytes(shape: tuple[int, int], points: list[tuple[int, int]], value: int) -> np.ndarray:
    byte = np.full(shape, 0b0000_1000, np.uint8)
    for y, x in points:
        byte[y, x] = value
    return byte


def test_vtd_iou_hand_cases() -> None:
    # single white (6), parallel, solid: all three attributes have the same one value
    gt = _bytes((30, 30), [(10, 10)], 6)
    near, far = _bytes((30, 30), [(10, 15)], 6), _bytes((30, 30), [(14, 14)], 6)
    corner = _bytes((30, 30), [(0, 0)], 6)
    # a radius-5 disk holds 81 pixels; (10, 15) is at distance 5 (inside), (14, 14) at sqrt(32)
    for pred, expected in ((near, 100 / 81), (far, 0.0)):
        ev = LaneEvaluator(vtd_dilation=5)
        ev.add_bytes(gt, pred)
        assert ev.compute()["VTD_mIoU"] == pytest.approx(expected, abs=1e-12)
    # at the image corner only the quarter disk is inside: 6 + 5 + 5 + 5 + 4 + 1 = 26 pixels
    ev = LaneEvaluator(vtd_dilation=5)
    ev.add_bytes(corner, corner)
    assert ev.compute()["VTD_mIoU"] == pytest.approx(100 / 26, abs=1e-12)
    # summed over frames, not averaged: (1 + 0) / (81 + 82)
    ev = LaneEvaluator(vtd_dilation=5)
    ev.add_bytes(gt, near)
    ev.add_bytes(gt, far)
    assert ev.compute()["VTD_IoU/category"] == pytest.approx(100 / 163, abs=1e-12)


@pytest.mark.parametrize("radius", [5, 2])
def test_vtd_iou_matches_float64_reference_on_random_masks(radius: int) -> None:
    rng = np.random.default_rng(radius)
    frames = []
    for _ in range(4):
        shape = (int(rng.integers(18, 30)), int(rng.integers(18, 30)))
        values = rng.integers(0, 8, shape) + (rng.integers(0, 2, shape) << 4)
        values = values + (rng.integers(0, 2, shape) << 5)
        gt = np.where(rng.random(shape) < 0.05, values, 8).astype(np.uint8)
        moved = np.roll(gt, (int(rng.integers(-3, 4)), int(rng.integers(-3, 4))), axis=(0, 1))
        noise = np.where(rng.random(shape) < 0.02, values, 8).astype(np.uint8)
        pred = np.where(rng.random(shape) < 0.7, moved, noise).astype(np.uint8)
        frames.append((gt, pred))
    frames.append((np.full((20, 20), 8, np.uint8), frames[0][1][:20, :20].copy()))  # no gt
    ev = LaneEvaluator(vtd_dilation=radius)
    for gt, pred in frames:
        ev.add_bytes(gt, pred)
    assert ev.compute()["VTD_mIoU"] == pytest.approx(_reference_vtd_miou(frames, radius), abs=1e-9)
