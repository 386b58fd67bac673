"""Articulated people: the 14 body boxes follow the joints exactly."""

from __future__ import annotations

import numpy as np
import pytest

from drivemtl.data.synthetic.objects import LIMBS, J, limb_boxes, person_joints


@pytest.mark.parametrize(("phase", "riding"), [(0.0, False), (0.37, False), (1.1, True)])
def test_limb_boxes_span_their_joints(phase, riding):
    height = 1.8
    joints = person_joints(height, phase, riding)
    before = joints.copy()
    boxes = limb_boxes(joints, height)
    np.testing.assert_array_equal(joints, before)  # the joints are not modified
    assert len(boxes) == 1 + len(LIMBS)
    k = height / 1.75
    np.testing.assert_allclose(boxes[0][0][:3, 3], joints[J["head"]])
    assert boxes[0][1] == pytest.approx((0.19 * k, 0.25 * k, 0.21 * k))
    hips = (joints[J["right_hip"]] + joints[J["left_hip"]]) / 2
    for (transform, size), (a_name, b_name, tx, tz, ext) in zip(boxes[1:], LIMBS, strict=True):
        a = joints[J[a_name]]
        b = hips if b_name == "_hips" else joints[J[b_name]]
        rot = transform[:3, :3]
        np.testing.assert_allclose(rot.T @ rot, np.eye(3), atol=1e-12)  # orthonormal
        assert np.linalg.det(rot) == pytest.approx(1.0)  # right-handed
        # local x is the world x axis made orthogonal to local y: x spans with y the plane of
        # (1, 0, 0), so local z = x X y has no world-x component, and x points along +x
        assert rot[0, 2] == pytest.approx(0.0, abs=1e-12)
        assert rot[0, 0] > 0
        length = np.linalg.norm(b - a)
        np.testing.assert_allclose(rot[:, 1], (b - a) / length, atol=1e-12)  # local y: a -> b
        assert size == pytest.approx((tx * k, length + ext, tz * k))
        # the box runs from joint a to `ext` past joint b along its local y axis
        np.testing.assert_allclose(transform[:3, 3] - rot[:, 1] * size[1] / 2, a, atol=1e-12)
        np.testing.assert_array_equal(transform[3], [0.0, 0.0, 0.0, 1.0])
