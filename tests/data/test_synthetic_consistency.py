"""The data layer on the synthetic world's output: every set loads, and transforms keep its exact
labels consistent (flipped keypoints inside flipped boxes, resized flow warps the resized
reference frame)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from drivemtl.data import build_dataset, data_config_from_card
from drivemtl.data.transforms import RandomFlip, Resize, flip_sample

synthetic = pytest.importorskip("drivemtl.data.synthetic")
RAW = {"resize": False, "normalize": False, "flip": 0.0}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth") / "all"
    synthetic.generate_dataset(out, preset="all", num_frames=6, size=(192, 108), seed=3,
                               progress=False)  # fmt: skip
    return out


def _warp(image: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """Float64 bilinear backward warp: out(x) = image(x + flow(x))."""
    _, h, w = image.shape
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    sx, sy = np.clip(x + flow[0], 0, w - 1), np.clip(y + flow[1], 0, h - 1)
    x0, y0 = np.floor(sx).astype(int), np.floor(sy).astype(int)
    x1, y1 = np.minimum(x0 + 1, w - 1), np.minimum(y0 + 1, h - 1)
    ax, ay = sx - x0, sy - y0
    return (image[:, y0, x0] * (1 - ax) * (1 - ay) + image[:, y0, x1] * ax * (1 - ay)
            + image[:, y1, x0] * (1 - ax) * ay + image[:, y1, x1] * ax * ay)  # fmt: skip


def _photometric_error(sample, flow, moving) -> float:
    """Mean |key - warp(reference, flow)| over the `moving` pixels."""
    warped = _warp(sample.reference.image.double().numpy(), flow)
    diff = np.abs(warped - sample.image.double().numpy()).mean(0)
    return float(diff[moving].mean())


def _moving(sample, scale: float = 1.0) -> np.ndarray:
    """Valid pixels moving by more than `scale` pixels (where a wrong flow shows)."""
    flow = sample.flow.double().numpy()
    return sample.flow_valid.numpy() & (np.hypot(flow[0], flow[1]) > scale)


def test_every_label_of_the_synthetic_world_loads(world):
    ds = build_dataset(data_config_from_card(world, clip={"sampling": "next"}, transforms=RAW))
    assert len(ds) == 6
    for i in range(len(ds)):
        s = ds[i]
        s.check()
        assert s.size == (108, 192) and s.reference is not None
        assert s.tags.lt(255).all() and s.instances is not None and s.depth.gt(0).any()
        assert s.flow is not None and s.flow_valid.any() and s.normals.abs().sum(0).gt(0).any()
        inst = s.instances
        with_mask = inst.masks.flatten(1).any(1)
        for k in torch.nonzero(with_mask).flatten().tolist():  # masks lie inside their boxes
            ys, xs = torch.nonzero(inst.masks[k], as_tuple=True)
            x1, y1, x2, y2 = inst.boxes[k].tolist()
            assert xs.min() >= x1 - 1 and xs.max() + 1 <= x2 + 1
            assert ys.min() >= y1 - 1 and ys.max() + 1 <= y2 + 1


def test_flipped_keypoints_stay_in_flipped_boxes(world):
    ds = build_dataset(data_config_from_card(world, transforms=RAW))
    checked = 0
    for i in range(len(ds)):
        s = ds[i]
        flip_sample(s)
        kp, boxes = s.instances.keypoints, s.instances.boxes
        present = kp[..., 2] == 2  # visible joints lie on the object (occluded ones may not)
        inside = (
            (kp[..., 0] >= boxes[:, None, 0] - 1) & (kp[..., 0] <= boxes[:, None, 2] + 1)
            & (kp[..., 1] >= boxes[:, None, 1] - 1) & (kp[..., 1] <= boxes[:, None, 3] + 1)
        )  # fmt: skip
        assert inside[present].all()
        checked += int(present.sum())
    assert checked > 0


@pytest.mark.parametrize("height", [54, 81])
def test_resized_flow_warps_resized_reference(world, height):
    ds = build_dataset(data_config_from_card(world, clip={"sampling": "next"}, transforms=RAW))
    s = ds[1]
    Resize([height], random_choice=False)(s)
    assert s.size[0] == height and s.reference.size == s.size
    flow = s.flow.double().numpy()
    moving = _moving(s, height / 108)
    assert moving.sum() > 500
    with_flow = _photometric_error(s, flow, moving)
    without = _photometric_error(s, np.zeros_like(flow), moving)
    unscaled = _photometric_error(s, flow * 108 / height, moving)
    reversed_flow = _photometric_error(s, -flow, moving)
    # JPEG noise and shading leave a residual of about 5 grey levels at any size; the flow must
    # still explain the motion better than no flow, unscaled flow or reversed flow
    full = ds[1]
    full_error = _photometric_error(full, full.flow.double().numpy(), _moving(full))
    assert with_flow < 0.85 * without and with_flow < unscaled and with_flow < 0.6 * reversed_flow
    assert with_flow < 1.15 * full_error
    flipped = RandomFlip(p=1.0)(copy.deepcopy(s))  # flips the key and the reference frame
    flipped_flow = flipped.flow.double().numpy()
    flipped_error = _photometric_error(flipped, flipped_flow, moving[:, ::-1])
    assert flipped_error == pytest.approx(with_flow, rel=0.05, abs=0.5)
