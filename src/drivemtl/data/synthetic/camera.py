"""Pinhole camera and rigid transforms of the synthetic world.

World frame: x right, y down, z forward (ground plane y = 0), like the OpenCV camera frame.
Pixel (col, row) has its centre at image coordinates (col, row).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np


def yaw_matrix(yaw: float) -> np.ndarray:
    """Rotation about the (down) y axis: local +z turns towards +x by `yaw` radians."""
    c, s = np.cos(yaw), np.sin(yaw)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def pitch_matrix(pitch: float) -> np.ndarray:
    """Rotation about the x axis (positive pitch tilts local +z downwards)."""
    c, s = np.cos(pitch), np.sin(pitch)
    return np.array([[1.0, 0.0, 0.0], [0.0, c, s], [0.0, -s, c]])


def rigid(rotation: np.ndarray, translation: np.ndarray) -> np.ndarray:
    """4x4 homogeneous transform from a 3x3 rotation and a translation."""
    out = np.eye(4)
    out[:3, :3] = rotation
    out[:3, 3] = translation
    return out


def invert_rigid(transform: np.ndarray) -> np.ndarray:
    """Inverse of a 4x4 rigid transform (or a stack [..., 4, 4])."""
    rot = np.swapaxes(transform[..., :3, :3], -1, -2)
    out = np.zeros_like(transform)
    out[..., :3, :3] = rot
    out[..., :3, 3] = -np.einsum("...ij,...j->...i", rot, transform[..., :3, 3])
    out[..., 3, 3] = 1.0
    return out


@dataclass
class Camera:
    """Pinhole intrinsics for a W x H image, mounted `mount_height` metres above the road."""

    width: int
    height: int
    fx: float
    fy: float
    cx: float
    cy: float
    mount_height: float = 1.5
    _rays: np.ndarray | None = field(default=None, repr=False, compare=False)
    _inv_norms: np.ndarray | None = field(default=None, repr=False, compare=False)

    @classmethod
    def default(cls, width: int, height: int, mount_height: float = 1.5) -> Camera:
        """A 64 degree horizontal field of view, principal point at the image centre."""
        f = 0.8 * width
        return cls(width, height, f, f, (width - 1) / 2.0, (height - 1) / 2.0, mount_height)

    @property
    def matrix(self) -> np.ndarray:
        """The 3x3 intrinsic matrix K."""
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])

    def rays(self) -> np.ndarray:
        """Per-pixel ray directions [H, W, 3] with z = 1 (a point at depth d is d * ray)."""
        if self._rays is None:
            u = (np.arange(self.width) - self.cx) / self.fx
            v = (np.arange(self.height) - self.cy) / self.fy
            rays = np.ones((self.height, self.width, 3), dtype=np.float64)
            rays[..., 0] = u[None, :]
            rays[..., 1] = v[:, None]
            self._rays = rays
        return self._rays

    def inverse_ray_norms(self) -> np.ndarray:
        """Flat [H * W] float32 1 / |ray| (cosines of view angles against the optical axis)."""
        if self._inv_norms is None:
            self._inv_norms = _inverse_ray_norms(
                self.width, self.height, self.fx, self.fy, self.cx, self.cy
            )
        return self._inv_norms

    def project(self, points: np.ndarray) -> np.ndarray:
        """Camera-frame points [..., 3] -> pixel coordinates [..., 2] (z must be > 0)."""
        z = points[..., 2]
        return np.stack(
            [self.fx * points[..., 0] / z + self.cx, self.fy * points[..., 1] / z + self.cy],
            axis=-1,
        )

    def as_dict(self) -> dict[str, float | int]:
        """Intrinsics for the dataset card, in pixel-edge coordinates (pixel centres at +0.5)."""
        return {
            "width": self.width, "height": self.height, "fx": self.fx, "fy": self.fy,
            "cx": self.cx + 0.5, "cy": self.cy + 0.5, "mount_height_m": self.mount_height,
        }  # fmt: skip


def affine(points: np.ndarray, matrix: np.ndarray, translate: bool = True) -> np.ndarray:
    """points [N, 3] -> matrix[:3, :3] @ p (+ matrix[:3, 3]), column by column.

    Written out because numpy's matmul of a tall [N, 3] array is slow (and thread-hungry)."""
    m = matrix.astype(points.dtype)
    out = np.empty((len(points), 3), dtype=points.dtype)
    x, y, z = points[:, 0], points[:, 1], points[:, 2]
    for i in range(3):
        row = x * m[i, 0]
        row += y * m[i, 1]
        row += z * m[i, 2]
        if translate:
            row += m[i, 3]
        out[:, i] = row
    return out


@lru_cache(maxsize=8)
def _inverse_ray_norms(
    width: int, height: int, fx: float, fy: float, cx: float, cy: float
) -> np.ndarray:
    """Read-only flat [H * W] float32 1 / |(u, v, 1)| per pixel, shared by equal cameras."""
    u = (np.arange(width) - cx) / fx
    v = (np.arange(height) - cy) / fy
    squared = (u * u)[None, :] + (v * v)[:, None]  # the sum order of norm(): u^2 + v^2 + 1
    squared += 1.0
    out = (1.0 / np.sqrt(squared)).astype(np.float32).ravel()
    out.flags.writeable = False
    return out
