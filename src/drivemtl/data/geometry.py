"""Camera geometry for dense labels: surface normals from a depth map and pinhole intrinsics."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Intrinsics:
    """Pinhole intrinsics in pixels (principal point in the same pixel convention as the image)."""

    fx: float
    fy: float
    cx: float
    cy: float

    def scaled(self, sy: float, sx: float) -> Intrinsics:
        """Intrinsics of the same camera after resizing the image by (sy, sx)."""
        return Intrinsics(self.fx * sx, self.fy * sy, self.cx * sx, self.cy * sy)


def backproject(depth: np.ndarray, k: Intrinsics) -> np.ndarray:
    """Depth [H, W] (metres along z) -> camera-frame points [H, W, 3] (x right, y down, z forward)."""
    h, w = depth.shape
    v, u = np.mgrid[0:h, 0:w].astype(np.float64)
    z = depth.astype(np.float64)
    return np.stack([(u - k.cx) * z / k.fx, (v - k.cy) * z / k.fy, z], axis=-1)


def normals_from_depth(depth: np.ndarray, k: Intrinsics) -> np.ndarray:
    """Unit surface normals [3, H, W] float32 facing the camera, from central differences of the
    back-projected points; 0 where the depth or a neighbour used is invalid (<= 0 or not finite)."""
    valid = np.isfinite(depth) & (depth > 0)
    points = backproject(np.where(valid, depth, 0.0), k)
    du = np.zeros_like(points)
    dv = np.zeros_like(points)
    du[:, 1:-1] = points[:, 2:] - points[:, :-2]
    dv[1:-1] = points[2:] - points[:-2]
    normal = np.cross(du, dv)
    ok = np.zeros_like(valid)
    ok[1:-1, 1:-1] = (
        valid[1:-1, 1:-1] & valid[1:-1, 2:] & valid[1:-1, :-2] & valid[2:, 1:-1] & valid[:-2, 1:-1]
    )
    length = np.linalg.norm(normal, axis=-1)
    ok &= length > 0
    normal[ok] /= length[ok][:, None]
    facing = np.einsum("hwc,hwc->hw", normal, points) > 0
    normal[facing] *= -1.0  # point towards the camera
    normal[~ok] = 0.0
    return normal.transpose(2, 0, 1).astype(np.float32)
