"""Consistency of every label of rendered frames, checked against each other and the geometry."""

from __future__ import annotations

import itertools

import cv2
import numpy as np
import pytest

from drivemtl.data.synthetic import render_sequence
from drivemtl.data.synthetic.camera import Camera
from drivemtl.data.synthetic.render import THING_INDEX
from drivemtl.structures.bdd import IGNORE_INDEX, SEMANTIC_CLASSES, THING_CLASSES, THING_TO_SEMANTIC

SIZE = (192, 108)
SEM = {name: i for i, name in enumerate(SEMANTIC_CLASSES)}
SCENES = ("city street", "residential", "highway", "parking lot", "tunnel", "gas stations")


@pytest.fixture(scope="module")
def sequences():
    return {
        scene: list(
            render_sequence(3, SIZE, seed=i, scene=scene, weather="clear", timeofday="daytime")
        )
        for i, scene in enumerate(SCENES)
    }


def _frames(sequences):
    return [f for seq in sequences.values() for f in seq]


def test_boxes_are_tight_boxes_of_visible_instance_masks(sequences):
    checked = 0
    for frame in _frames(sequences):
        for obj in frame.things:
            rows, cols = np.nonzero(frame.instance_ids == obj.track_id)
            assert len(rows) == obj.area
            assert obj.box == (cols.min(), rows.min(), cols.max() + 1, rows.max() + 1)
            assert (frame.instance_category[rows, cols] == THING_INDEX[obj.category]).all()
            checked += 1
    assert checked > 20


def test_semantic_things_equal_union_of_instance_masks(sequences):
    for frame in _frames(sequences):
        for index, thing in enumerate(THING_CLASSES):
            semantic = frame.semantic == SEM[THING_TO_SEMANTIC[thing]]
            np.testing.assert_array_equal(semantic, frame.instance_category == index)
        labelled = {o.track_id for o in frame.things}
        assert set(np.unique(frame.instance_ids)) - {0} == labelled


def test_drivable_and_lanes_only_on_road(sequences):
    seen_lanes = 0
    for frame in _frames(sequences):
        road = frame.semantic == SEM["road"]
        assert road[frame.drivable < 2].all()
        assert road[frame.lanes != 255].all()
        assert (frame.drivable == 0).any()
        seen_lanes += int((frame.lanes != 255).sum())
    assert seen_lanes > 0


def test_depth_valid_exactly_off_sky_and_ground_is_a_plane_at_camera_height(sequences):
    camera = Camera.default(*SIZE)
    rays = camera.rays()
    for frame in _frames(sequences):
        sky = frame.semantic == SEM["sky"]
        np.testing.assert_array_equal(frame.depth > 0, ~sky)
        assert np.isfinite(frame.depth).all()
        points = frame.depth[..., None] * rays
        road = frame.semantic == SEM["road"]
        normals = frame.normals.transpose(1, 2, 0)[road]
        # every road pixel lies on one plane, 1.5 m below the camera, with that plane's normal
        np.testing.assert_allclose(np.einsum("ni,ni->n", normals, points[road]), -1.5, atol=2e-3)
        np.testing.assert_allclose(normals, np.broadcast_to(normals[0], normals.shape), atol=1e-5)


def test_normals_unit_facing_camera_and_zero_on_sky(sequences):
    camera = Camera.default(*SIZE)
    for frame in _frames(sequences):
        n = frame.normals.transpose(1, 2, 0)
        valid = frame.depth > 0
        np.testing.assert_allclose(np.linalg.norm(n[valid], axis=1), 1.0, atol=1e-5)
        assert (n[~valid] == 0).all()
        assert (np.einsum("ni,ni->n", n[valid], camera.rays()[valid]) < 0).all()


def test_boxes_are_planar_patches(sequences):
    """Neighbouring pixels with the same normal and depth step lie on one plane n.X = c."""
    camera = Camera.default(*SIZE)
    frame = sequences["city street"][0]
    points = frame.depth[..., None] * camera.rays()
    n = frame.normals.transpose(1, 2, 0)
    c = np.einsum("hwi,hwi->hw", n, points)
    same = (np.abs(n[:, 1:] - n[:, :-1]).max(-1) < 1e-6) & (frame.depth[:, 1:] > 0)
    same &= frame.instance_ids[:, 1:] == frame.instance_ids[:, :-1]
    same &= frame.semantic[:, 1:] == frame.semantic[:, :-1]
    diff = np.abs(c[:, 1:] - c[:, :-1])[same]
    assert np.median(diff) < 1e-4


def test_flow_warps_next_frame_onto_this_frame(sequences):
    errors = []
    for seq in sequences.values():
        for a, b in itertools.pairwise(seq):
            h, w = a.depth.shape
            cols, rows = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
            warped = cv2.remap(
                b.image.astype(np.float32),
                cols + a.flow[0],
                rows + a.flow[1],
                cv2.INTER_LINEAR,
                borderMode=cv2.BORDER_REPLICATE,
            )
            valid = a.flow_valid
            assert valid.mean() > 0.35
            errors.append(np.abs(warped - a.image.astype(np.float32))[valid].mean())
    assert np.mean(errors) < 5.0, errors


def test_flow_is_not_trivial(sequences):
    seq = sequences["highway"]
    a, b = seq[0], seq[1]
    zero_err = np.abs(b.image.astype(float) - a.image.astype(float))[a.flow_valid].mean()
    h, w = a.depth.shape
    cols, rows = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    warped = cv2.remap(
        b.image.astype(np.float32), cols + a.flow[0], rows + a.flow[1], cv2.INTER_LINEAR
    )
    flow_err = np.abs(warped - a.image.astype(np.float32))[a.flow_valid].mean()
    assert flow_err < 0.6 * zero_err
    assert np.abs(a.flow[:, a.flow_valid]).max() > 2.0


def test_visible_keypoints_inside_person_boxes(sequences):
    people = 0
    for frame in _frames(sequences):
        for obj in frame.objects:
            if obj.category not in ("pedestrian", "rider"):
                continue
            assert obj.keypoints is not None and obj.keypoints.shape == (18, 3)
            vis = obj.keypoints[:, 2] > 0
            x1, y1, x2, y2 = obj.box
            kx, ky = obj.keypoints[vis, 0], obj.keypoints[vis, 1]
            assert ((kx >= x1) & (kx < x2) & (ky >= y1) & (ky < y2)).all()
            people += 1
    assert people > 0


def test_track_ids_consistent_between_frames(sequences):
    matched = 0
    for seq in sequences.values():
        for a, b in itertools.pairwise(seq):
            cat_b = {o.track_id: o.category for o in b.objects}
            for obj in a.things:
                if obj.track_id in cat_b:
                    assert cat_b[obj.track_id] == obj.category
                # the visible pixels of the instance land on the same instance in the next frame
                mask = (a.instance_ids == obj.track_id) & a.flow_valid
                if mask.sum() < 20:
                    continue
                rows, cols = np.nonzero(mask)
                r = np.rint(rows + a.flow[1][mask]).astype(int)
                c = np.rint(cols + a.flow[0][mask]).astype(int)
                assert (b.instance_ids[r, c] == obj.track_id).mean() > 0.9
                matched += 1
    assert matched > 5


def test_dropped_tiny_instances_are_ignored_in_semantic(sequences):
    for frame in _frames(sequences):
        ignore = frame.semantic == IGNORE_INDEX
        assert (frame.instance_ids[ignore] == 0).all()


def test_lane_polylines_project_into_image(sequences):
    frame = sequences["highway"][0]
    assert frame.lane_lines
    for lane in frame.lane_lines:
        assert lane.vertices.shape[1] == 2 and len(lane.vertices) >= 2
        assert (lane.vertices >= 0).all()
        assert (lane.vertices[:, 0] <= SIZE[0]).all()
        assert (lane.vertices[:, 1] <= SIZE[1]).all()


def test_tags_change_the_image():
    kwargs = {"size": (128, 72), "seed": 3, "scene": "city street", "weather": "clear"}
    day = next(render_sequence(1, timeofday="daytime", **kwargs))
    night = next(render_sequence(1, timeofday="night", **kwargs))
    fog = next(render_sequence(1, timeofday="daytime", **{**kwargs, "weather": "foggy"}))
    assert night.image.mean() < 0.5 * day.image.mean()
    far = day.depth > 40
    assert far.sum() > 50
    assert fog.image[far].std() < 0.5 * day.image[far].std()


def _census_penalty(image1: np.ndarray, image2: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """[H, W] census penalty of `image1` against `image2` warped by `flow` (the flow loss's)."""
    import torch

    from drivemtl.ops.photometric import census_transform, soft_hamming
    from drivemtl.ops.warp import warp_by_flow

    def tensor(x: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))[None]

    one, two = tensor(image1.transpose(2, 0, 1) / 255.0), tensor(image2.transpose(2, 0, 1) / 255.0)
    warped = warp_by_flow(two, tensor(flow))
    hamming = soft_hamming(census_transform(one), census_transform(warped))
    return ((hamming + 0.01) ** 0.4)[0, 0].numpy()


def test_census_loss_prefers_the_true_flow_to_zero_flow_on_moving_pixels(sequences):
    """The unsupervised flow loss can only learn if warping the next frame by the true flow
    matches this frame better than not warping it. With single-scale, distance-faded textures
    (surfaces flat far away, changing contrast as the camera approached) zero flow won."""
    zero, true = [], []
    for seq in sequences.values():
        for a, b in itertools.pairwise(seq):
            # pixels whose whole 7x7 census patch has valid true flow, moving more than 1 px
            patch_valid = cv2.erode(a.flow_valid.astype(np.uint8), np.ones((7, 7), np.uint8)) > 0
            moving = patch_valid & (np.linalg.norm(a.flow, axis=0) > 1.0)
            zero.append(_census_penalty(a.image, b.image, np.zeros_like(a.flow))[moving].mean())
            true.append(_census_penalty(a.image, b.image, a.flow)[moving].mean())
    assert np.mean(true) < 0.9 * np.mean(zero), (np.mean(true), np.mean(zero))
