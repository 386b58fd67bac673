"""Z-buffered rasterisation against analytic ray-plane intersections (float64 references)."""

from __future__ import annotations

import numpy as np

from drivemtl.data.synthetic.camera import Camera, rigid
from drivemtl.data.synthetic.raster import FIRST_FACE, GROUND, SKY, rasterize

CAM = Camera.default(80, 60)
W2C = rigid(np.eye(3), np.array([0.0, 1.5, 0.0]))  # camera 1.5 m above the ground at the origin


def _boxes(*specs):
    poses = np.stack([rigid(np.eye(3), np.array([x, y - 1.5, z])) for (x, y, z), _ in specs])
    sizes = np.array([size for _, size in specs], dtype=float)
    return poses, sizes


def _ray_grid():
    return CAM.rays()


def test_ground_depth_is_the_ray_plane_intersection():
    r = rasterize(CAM, W2C, np.zeros((0, 4, 4)), np.zeros((0, 3)), np.zeros(0, int))
    rays = _ray_grid()
    expected = np.where(rays[..., 1] > 0, 1.5 / np.maximum(rays[..., 1], 1e-12), 0.0)
    expected[expected > 200] = 0.0
    ground = r.face == GROUND
    np.testing.assert_array_equal(ground, expected > 0)
    np.testing.assert_allclose(1.0 / r.inv_depth[ground], expected[ground], rtol=1e-5)
    assert (r.face[rays[..., 1] <= 0] == SKY).all()
    np.testing.assert_allclose(r.face_normals[GROUND], [0.0, -1.0, 0.0])


def test_front_face_depth_normal_and_coverage():
    # a 2 m cube centred 10 m ahead at camera height: its front face is the plane z = 9
    poses, sizes = _boxes(((0.0, 0.0, 10.0), (2.0, 2.0, 2.0)))
    r = rasterize(CAM, W2C, poses, sizes, np.array([0]), {0})
    rays = _ray_grid()
    x, y = rays[..., 0] * 9.0, rays[..., 1] * 9.0
    inside = (np.abs(x) < 1.0) & (np.abs(y) < 1.0)
    margin = 0.6 * 9.0 / CAM.fx  # half a pixel (and a bit) at 9 m
    sure_in = (np.abs(x) < 1.0 - margin) & (np.abs(y) < 1.0 - margin)
    sure_out = (np.abs(x) > 1.0 + margin) | (np.abs(y) > 1.0 + margin)
    box = r.face >= FIRST_FACE
    assert box[sure_in].all() and not box[sure_out].any()
    assert inside.sum() > 50
    np.testing.assert_allclose(1.0 / r.inv_depth[box], 9.0, rtol=1e-5)
    faces = np.unique(r.face[box])
    assert len(faces) == 1
    np.testing.assert_allclose(r.face_normals[faces[0]], [0.0, 0.0, -1.0], atol=1e-12)
    assert r.amodal_area[0] == box.sum() and 0 not in r.truncated


def test_nearer_box_occludes_and_depth_is_the_minimum():
    poses, sizes = _boxes(((0.0, 0.0, 10.0), (2.0, 2.0, 2.0)), ((0.5, 0.0, 6.0), (1.0, 1.0, 1.0)))
    r = rasterize(CAM, W2C, poses, sizes, np.array([0, 1]), {0, 1})
    part = np.where(r.face >= FIRST_FACE, (r.face - FIRST_FACE) // 6, -1)
    near = part == 1
    assert near.any() and (part == 0).any()
    with np.errstate(divide="ignore"):
        depth = 1.0 / r.inv_depth
    front = near & (r.face == FIRST_FACE + 6 + 5)  # -z face of the small box: the plane z = 5.5
    np.testing.assert_allclose(depth[front], 5.5, rtol=1e-5)
    assert r.amodal_area[0] > (part == 0).sum()  # the big box is partly hidden


def test_wall_crossing_the_near_plane_is_clipped_exactly():
    # a long wall along z from -20 m to 40 m, its inner face the plane x = 3
    poses, sizes = _boxes(((3.5, -1.0, 10.0), (1.0, 4.0, 60.0)))
    r = rasterize(CAM, W2C, poses, sizes, np.array([0]), {0})
    wall = r.face >= FIRST_FACE
    rays = _ray_grid()
    assert wall.sum() > 100 and 0 in r.truncated
    np.testing.assert_allclose(1.0 / r.inv_depth[wall], 3.0 / rays[..., 0][wall], rtol=1e-4)


def test_box_leaving_the_image_is_truncated():
    poses, sizes = _boxes(((4.0, 0.0, 8.0), (2.0, 2.0, 2.0)))
    r = rasterize(CAM, W2C, poses, sizes, np.array([0]), {0})
    assert (r.face[:, -1] >= FIRST_FACE).any()
    assert 0 in r.truncated
