"""Normals from depth against analytic planes (float64 references)."""

from __future__ import annotations

import numpy as np

from drivemtl.data.geometry import Intrinsics, backproject, normals_from_depth

K = Intrinsics(fx=50.0, fy=40.0, cx=16.0, cy=12.0)


def _plane_depth(normal: np.ndarray, offset: float, h: int = 24, w: int = 32) -> np.ndarray:
    """Depth of the plane n . P = offset seen through K (ray P = z * ((u-cx)/fx, (v-cy)/fy, 1))."""
    v, u = np.mgrid[0:h, 0:w].astype(np.float64)
    rays = np.stack([(u - K.cx) / K.fx, (v - K.cy) / K.fy, np.ones_like(u)], axis=-1)
    with np.errstate(divide="ignore"):
        return offset / (rays @ normal)


def test_tilted_plane_normal():
    n = np.array([0.2, -0.3, -0.9])
    n /= np.linalg.norm(n)
    depth = _plane_depth(n, offset=-5.0)  # n . P = -5 < 0: n faces the camera
    assert (depth > 0).all()
    normals = normals_from_depth(depth, K)
    assert np.allclose(normals[:, 1:-1, 1:-1], n[:, None, None], atol=1e-5)
    assert (normals[:, 0] == 0).all() and (normals[:, :, -1] == 0).all()


def test_ground_plane_points_up_and_backprojection():
    depth = _plane_depth(np.array([0.0, 1.0, 0.0]), offset=1.5)  # ground 1.5 m below (y down)
    depth[~np.isfinite(depth) | (depth <= 0)] = 0  # at / above the horizon: no ground
    normals = normals_from_depth(depth, K)
    valid = np.abs(normals).sum(0) > 0
    assert valid.sum() > 100
    assert np.allclose(normals[:, valid], np.array([0.0, -1.0, 0.0])[:, None], atol=1e-6)
    points = backproject(depth, K)
    assert np.allclose(points[depth > 0][:, 1], 1.5)
