"""Transforms keep every label type consistent with the image (checked against float64 references)."""

from __future__ import annotations

import copy
import random

import numpy as np
import pytest
import torch

from drivemtl.data.config import TransformConfig
from drivemtl.data.transforms import (
    Compose,
    Normalize,
    PhotometricDistortion,
    RandomCrop,
    RandomFlip,
    Resize,
    build_transforms,
)
from drivemtl.structures.bdd import POSE_FLIP_PAIRS, POSE_JOINTS
from drivemtl.structures.instances import Instances
from drivemtl.structures.sample import LaneLine, Sample, SampleMeta

H, W = 48, 80
FLOW = (3.0, 2.0)  # the reference frame is the key frame moved by this (u, v)


def _pattern(h: int, w: int, du: float = 0.0, dv: float = 0.0) -> np.ndarray:
    """A smooth float64 RGB image, sampled at (x - du, y - dv) so that content moves by (du, dv)."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float64) + 0.5
    x, y = x - du, y - dv
    r = 127 + 100 * np.sin(x / 7.0) * np.cos(y / 9.0)
    g = 127 + 100 * np.cos(x / 11.0 + y / 13.0)
    b = 127 + 100 * np.sin((x + 2 * y) / 15.0)
    return np.stack([r, g, b])


def _warp(image: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """Float64 bilinear backward warp: out(x) = image(x + flow(x)) (pixel centres at +0.5)."""
    _, h, w = image.shape
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    sx = np.clip(x + flow[0], 0, w - 1)
    sy = np.clip(y + flow[1], 0, h - 1)
    x0, y0 = np.floor(sx).astype(int), np.floor(sy).astype(int)
    x1, y1 = np.minimum(x0 + 1, w - 1), np.minimum(y0 + 1, h - 1)
    ax, ay = sx - x0, sy - y0
    return (
        image[:, y0, x0] * (1 - ax) * (1 - ay)
        + image[:, y0, x1] * ax * (1 - ay)
        + image[:, y1, x0] * (1 - ax) * ay
        + image[:, y1, x1] * ax * ay
    )


def _frame(du: float = 0.0, dv: float = 0.0, name: str = "f0") -> Sample:
    image = torch.from_numpy(_pattern(H, W, du, dv)).float()
    boxes = torch.tensor([[10.0, 8.0, 30.0, 40.0], [50.0, 5.0, 78.0, 20.0], [0.0, 30.0, 6.0, 46.0]])
    masks = torch.zeros((3, H, W), dtype=torch.bool)
    for k, (x1, y1, x2, y2) in enumerate(boxes.int().tolist()):
        masks[k, y1:y2, x1:x2] = True
    keypoints = torch.zeros((3, len(POSE_JOINTS), 3))
    gen = torch.Generator().manual_seed(0)
    for k in range(3):
        x1, y1, x2, y2 = boxes[k].tolist()
        keypoints[k, :, 0] = x1 + (x2 - x1) * torch.rand(len(POSE_JOINTS), generator=gen)
        keypoints[k, :, 1] = y1 + (y2 - y1) * torch.rand(len(POSE_JOINTS), generator=gen)
        keypoints[k, :, 2] = 2.0
    instances = Instances(
        boxes=boxes,
        classes=torch.tensor([0, 2, 3]),
        track_ids=torch.tensor([7, 8, 9]),
        masks=masks,
        keypoints=keypoints,
        ignore=torch.zeros(3, dtype=torch.bool),
    )
    semantic = torch.arange(W).repeat(H, 1) % 19
    depth = (torch.arange(H * W, dtype=torch.float32).reshape(H, W) + 1) / 10
    normals = torch.nn.functional.normalize(torch.rand(3, H, W, generator=gen) - 0.5, dim=0)
    lane_vertices = torch.tensor([[20.0, 47.0], [35.0, 20.0]])
    return Sample(
        image=image,
        meta=SampleMeta(name=name, image_set="s", orig_size=(H, W), image_size=(H, W)),
        tasks=frozenset({"detection", "pose", "instance", "semantic", "depth", "normals", "flow"}),
        instances=instances,
        semantic=semantic,
        drivable=semantic % 3,
        lanes=torch.stack([semantic % 9, semantic % 3, semantic % 3]),
        lane_lines=[LaneLine(lane_vertices, "LL", category=6, direction=0, style=1)],
        depth=depth,
        normals=normals,
        edges=(semantic % 2),
        flow=torch.tensor(FLOW).view(2, 1, 1).expand(2, H, W).clone(),
        flow_valid=torch.ones((H, W), dtype=torch.bool),
    )


def _pair() -> Sample:
    key = _frame()
    key.references = [_frame(FLOW[0], FLOW[1], name="f1")]  # content moves by flow:
    # key(x) = ref(x + flow)
    return key


def _warp_error(sample: Sample, border: int = 6) -> float:
    warped = _warp(sample.reference.image.double().numpy(), sample.flow.double().numpy())
    diff = np.abs(warped - sample.image.double().numpy())[:, border:-border, border:-border]
    return float(diff.mean())


def test_reference_pair_is_consistent_before_any_transform():
    sample = _pair()
    assert _warp_error(sample) < 0.05
    wrong = copy.deepcopy(sample)
    wrong.flow = -wrong.flow
    assert _warp_error(wrong) > 5.0  # the check can fail


def test_flip_mirrors_every_label():
    sample = _pair()
    before = copy.deepcopy(sample)
    RandomFlip(p=1.0)(sample)
    assert sample.meta.flipped and sample.reference.meta.flipped
    assert torch.equal(sample.image, before.image.flip(-1))
    assert torch.equal(sample.semantic, before.semantic.flip(-1))
    assert torch.equal(sample.normals[0], -before.normals[0].flip(-1))
    assert torch.equal(sample.normals[1:], before.normals[1:].flip(-1))
    assert torch.equal(sample.flow[0], -before.flow[0].flip(-1))
    assert _warp_error(sample) < 0.05  # flipped flow still warps the flipped reference
    inst, old = sample.instances, before.instances
    assert torch.equal(inst.boxes[:, [0, 2]], W - old.boxes[:, [2, 0]])
    for left, right in POSE_FLIP_PAIRS:  # left joint now sits where the mirrored right one was
        assert torch.allclose(inst.keypoints[:, left, 0], W - old.keypoints[:, right, 0])
        assert torch.equal(inst.keypoints[:, left, 1], old.keypoints[:, right, 1])
    kp = inst.keypoints
    inside = (kp[..., 0] >= inst.boxes[:, None, 0]) & (kp[..., 0] <= inst.boxes[:, None, 2])
    assert inside.all()  # flipped keypoints still inside flipped boxes
    assert torch.equal(inst.masks, old.masks.flip(-1))
    assert sample.lane_lines[0].vertices[:, 0].tolist() == [W - 20.0, W - 35.0]
    RandomFlip(p=1.0)(sample)  # flipping twice restores everything
    assert torch.allclose(sample.instances.keypoints, before.instances.keypoints, atol=1e-5)
    assert torch.equal(sample.normals, before.normals) and torch.equal(sample.flow, before.flow)


@pytest.mark.parametrize("height", [24, 96, 36])
def test_resize_scales_flow_boxes_keypoints_and_keeps_depth_values(height):
    sample = _pair()
    before = copy.deepcopy(sample)
    Resize([height], random_choice=False)(sample)
    h, w = sample.size
    assert h == height and w == round(W * height / H)
    sy, sx = h / H, w / W
    assert sample.meta.scale == pytest.approx((sy, sx))
    assert torch.allclose(sample.flow[0], torch.full((h, w), FLOW[0] * sx))
    assert torch.allclose(sample.flow[1], torch.full((h, w), FLOW[1] * sy))
    # resized flow still warps the resized reference frame onto the resized key frame
    assert _warp_error(sample, border=max(3, h // 8)) < 2.0
    unscaled = copy.deepcopy(sample)
    unscaled.flow = before.flow[:, :1, :1].expand(2, h, w).clone()
    if height != H:
        assert _warp_error(unscaled, border=max(3, h // 8)) > _warp_error(sample, max(3, h // 8))
    assert set(sample.depth.unique().tolist()) <= set(before.depth.unique().tolist())  # nearest
    assert sample.semantic.dtype == torch.int64 and sample.lanes.shape == (3, h, w)
    scale = torch.tensor([sx, sy, sx, sy])
    assert torch.allclose(sample.instances.boxes, before.instances.boxes * scale)
    kp, old = sample.instances.keypoints, before.instances.keypoints
    assert torch.allclose(kp[..., 0], old[..., 0] * sx) and torch.allclose(
        kp[..., 1], old[..., 1] * sy
    )
    for k in range(3):  # masks follow the boxes to within a pixel
        ys, xs = torch.nonzero(sample.instances.masks[k], as_tuple=True)
        box = sample.instances.boxes[k]
        assert abs(xs.min() - box[0]) <= 1 and abs(xs.max() + 1 - box[2]) <= 1
        assert abs(ys.min() - box[1]) <= 1 and abs(ys.max() + 1 - box[3]) <= 1
    assert sample.reference.size == sample.size


def test_crop_clips_boxes_drops_empty_instances_and_absent_keypoints():
    sample = _pair()
    random.seed(3)
    before = copy.deepcopy(sample)
    y0, x0, ch, cw = 10, 12, 30, 40
    from drivemtl.data.transforms import crop_sample

    crop_sample(sample, y0, x0, ch, cw)
    assert sample.size == (ch, cw) and sample.meta.crop == (y0, x0)
    assert torch.equal(sample.depth, before.depth[y0 : y0 + ch, x0 : x0 + cw])
    inst = sample.instances
    # box 0 (10..30, 8..40) -> (0..18, 0..30); box 1 (50..78) is clipped to (38..40); box 2 dropped
    assert inst.track_ids.tolist() == [7, 8]
    assert inst.boxes.tolist() == [[0.0, 0.0, 18.0, 30.0], [38.0, 0.0, 40.0, 10.0]]
    kp = inst.keypoints
    present = kp[..., 2] > 0
    assert ((kp[..., 0] >= 0) & (kp[..., 0] <= cw) & (kp[..., 1] >= 0) & (kp[..., 1] <= ch))[
        present
    ].all()
    old = before.instances.keypoints[:2]
    shifted_inside = (
        (old[..., 0] - x0 >= 0) & (old[..., 0] - x0 <= cw) & (old[..., 1] - y0 >= 0)
        & (old[..., 1] - y0 <= ch)
    )  # fmt: skip
    assert torch.equal(present, shifted_inside)
    assert torch.equal(inst.masks, before.instances.masks[:2, y0 : y0 + ch, x0 : x0 + cw])
    crop_sample(sample.reference, y0, x0, ch, cw)
    assert _warp_error(sample, border=4) < 0.05


def test_random_crop_same_window_for_key_and_reference():
    sample = _frame()
    sample.references = [copy.deepcopy(sample), copy.deepcopy(sample)]  # a clip of 3 frames
    random.seed(0)
    Compose([Resize([40, 56]), RandomCrop((32, 48)), RandomFlip(0.5), PhotometricDistortion()])(
        sample
    )
    for ref in sample.references:  # one random draw for every frame of the clip
        assert torch.equal(sample.image, ref.image)
        assert torch.equal(sample.instances.boxes, ref.instances.boxes)
        assert sample.meta.crop == ref.meta.crop and sample.meta.flipped == ref.meta.flipped


def test_photometric_stays_in_range_and_normalize_uses_imagenet_stats():
    sample = _frame()
    random.seed(1)
    PhotometricDistortion()(sample)
    assert sample.image.min() >= 0 and sample.image.max() <= 255
    sample.image = torch.full((3, 2, 2), 123.675)
    Normalize()(sample)
    assert torch.allclose(sample.image[0], torch.zeros(2, 2), atol=1e-6)
    expected_g = (123.675 - 116.28) / 57.12
    assert torch.allclose(sample.image[1], torch.full((2, 2), expected_g))


def test_build_transforms_train_and_eval():
    cfg = TransformConfig(heights=[24, 32], crop=(20, 30), flip=0.5, photometric=True)
    train = build_transforms(cfg, train=True)
    assert [type(t).__name__ for t in train.transforms] == [
        "Resize", "RandomCrop", "RandomFlip", "PhotometricDistortion", "Normalize",
    ]  # fmt: skip
    evaluation = build_transforms(cfg, train=False)
    sample = evaluation(_frame())
    assert sample.size == (24, 40) and not sample.meta.flipped
