import math

import numpy as np
import pytest
import torch

from drivemtl.ops import MultiScaleRoIAlign, assign_fpn_levels, roi_align
from drivemtl.ops._dispatch import torchvision_ops


def _bilinear(feature: np.ndarray, y: float, x: float) -> np.ndarray:
    """One bilinear sample with the C++ kernel's border rules (float64)."""
    _, height, width = feature.shape
    if y < -1.0 or y > height or x < -1.0 or x > width:
        return np.zeros(feature.shape[0])
    y, x = max(y, 0.0), max(x, 0.0)
    y_low, x_low = int(y), int(x)
    if y_low >= height - 1:
        y_low = y_high = height - 1
        y = float(y_low)
    else:
        y_high = y_low + 1
    if x_low >= width - 1:
        x_low = x_high = width - 1
        x = float(x_low)
    else:
        x_high = x_low + 1
    ly, lx = y - y_low, x - x_low
    hy, hx = 1.0 - ly, 1.0 - lx
    return (
        hy * hx * feature[:, y_low, x_low]
        + hy * lx * feature[:, y_low, x_high]
        + ly * hx * feature[:, y_high, x_low]
        + ly * lx * feature[:, y_high, x_high]
    )


def reference_roi_align(features, rois, out_size, scale, sampling_ratio, aligned):
    """Loop-by-loop RoIAlign (torchvision semantics) in float64."""
    features = features.detach().double().numpy()
    rois = rois.detach().double().numpy()
    out_h, out_w = out_size
    out = np.zeros((len(rois), features.shape[1], out_h, out_w))
    offset = 0.5 if aligned else 0.0
    for k, (b, x1, y1, x2, y2) in enumerate(rois):
        feature = features[int(b)]
        sx, sy = x1 * scale - offset, y1 * scale - offset
        rw, rh = x2 * scale - offset - sx, y2 * scale - offset - sy
        if not aligned:
            rw, rh = max(rw, 1.0), max(rh, 1.0)
        bw, bh = rw / out_w, rh / out_h
        gh = sampling_ratio if sampling_ratio > 0 else max(math.ceil(rh / out_h), 0)
        gw = sampling_ratio if sampling_ratio > 0 else max(math.ceil(rw / out_w), 0)
        count = max(gh * gw, 1)
        for ph in range(out_h):
            for pw in range(out_w):
                acc = np.zeros(feature.shape[0])
                for iy in range(gh):
                    y = sy + ph * bh + (iy + 0.5) * bh / gh
                    for ix in range(gw):
                        x = sx + pw * bw + (ix + 0.5) * bw / gw
                        acc += _bilinear(feature, y, x)
                out[k, :, ph, pw] = acc / count
    return torch.from_numpy(out)


def random_rois(num: int, batch: int, height: int, width: int, seed: int) -> torch.Tensor:
    """Boxes in image coordinates (stride 4) of all sizes, some leaving the map on every side."""
    gen = torch.Generator().manual_seed(seed)
    img_h, img_w = height * 4, width * 4
    ctr = torch.rand(num, 2, generator=gen, dtype=torch.float64) * torch.tensor(
        [img_w * 1.4, img_h * 1.4], dtype=torch.float64
    ) - torch.tensor([img_w * 0.2, img_h * 0.2], dtype=torch.float64)
    wh = torch.rand(num, 2, generator=gen, dtype=torch.float64) * torch.tensor(
        [img_w * 0.8, img_h * 0.8], dtype=torch.float64
    )
    image = torch.randint(0, batch, (num, 1), generator=gen).double()
    return torch.cat((image, ctr - wh / 2, ctr + wh / 2), dim=1)


@pytest.mark.parametrize("sampling_ratio", [-1, 2, 3])
@pytest.mark.parametrize("aligned", [True, False])
def test_roi_align_matches_float64_reference(sampling_ratio, aligned):
    gen = torch.Generator().manual_seed(1)
    features = torch.randn(2, 3, 9, 13, generator=gen, dtype=torch.float64)
    rois = random_rois(30, batch=2, height=9, width=13, seed=2)
    out = roi_align(features, rois, (3, 4), 0.25, sampling_ratio, aligned, impl="torch")
    expected = reference_roi_align(features, rois, (3, 4), 0.25, sampling_ratio, aligned)
    assert out.shape == (30, 3, 3, 4)
    assert torch.allclose(out, expected, atol=1e-12)
    # float32 agrees to float32 precision.
    out32 = roi_align(
        features.float(), rois.float(), (3, 4), 0.25, sampling_ratio, aligned, impl="torch"
    )
    assert torch.allclose(out32.double(), expected, atol=1e-5)


def test_roi_align_on_a_ramp_is_hand_computable():
    # f(y, x) = x: each bin averages the x coordinates of its samples.
    ramp = torch.arange(8, dtype=torch.float64).expand(1, 1, 8, 8).clone()
    rois = torch.tensor([[0.0, 0.0, 0.0, 4.0, 4.0]], dtype=torch.float64)
    out = roi_align(ramp, rois, 2, 1.0, 2, aligned=True, impl="torch")
    # aligned: start -0.5, bin 2 px, samples at x = 0, 1 | 2, 3 -> means 0.5 and 2.5.
    assert out[0, 0].tolist() == [[0.5, 2.5], [0.5, 2.5]]
    out = roi_align(ramp, rois, 2, 1.0, 2, aligned=False, impl="torch")
    # not aligned: start 0, samples at x = 0.5, 1.5 | 2.5, 3.5.
    assert out[0, 0].tolist() == [[1.0, 3.0], [1.0, 3.0]]


def test_roi_align_degenerate_empty_and_list_inputs():
    gen = torch.Generator().manual_seed(3)
    features = torch.randn(2, 4, 6, 7, generator=gen, dtype=torch.float64)
    degenerate = torch.tensor([[0.0, 2.0, 2.0, 2.0, 2.0]], dtype=torch.float64)
    # aligned=True and zero size: an empty sampling grid pools to zero.
    assert roi_align(features, degenerate, 2, 1.0, -1, True, impl="torch").abs().max() == 0
    empty = roi_align(features, torch.zeros(0, 5, dtype=torch.float64), (2, 3), impl="torch")
    assert empty.shape == (0, 4, 2, 3)
    boxes = [
        torch.tensor([[0.0, 0.0, 3.0, 4.0]]),
        torch.tensor([[1.0, 1.0, 6.0, 5.0], [0, 0, 7, 6]]),
    ]
    as_list = roi_align(features, boxes, 2, 1.0, 2, impl="torch")
    as_tensor = roi_align(
        features,
        torch.tensor([[0, 0, 0, 3, 4], [1, 1, 1, 6, 5], [1, 0, 0, 7, 6]], dtype=torch.float64),
        2,
        1.0,
        2,
        impl="torch",
    )
    assert torch.equal(as_list, as_tensor)
    with pytest.raises(ValueError, match="batch indices"):
        roi_align(features, torch.tensor([[5.0, 0, 0, 1, 1]], dtype=torch.float64), 2, impl="torch")
    with pytest.raises(ValueError, match=r"\[K, 5\]"):
        roi_align(features, torch.zeros(3, 4), 2)


def test_roi_align_gradcheck_including_boxes_leaving_the_map():
    gen = torch.Generator().manual_seed(4)
    features = torch.randn(2, 2, 5, 6, generator=gen, dtype=torch.float64, requires_grad=True)
    rois = torch.tensor(
        [
            [0, -3.0, -2.0, 9.0, 7.0],
            [1, 1.2, 0.7, 4.9, 3.3],
            [1, 3.0, 2.0, 9.5, 8.0],
            [0, -9, -9, -2, -1],
        ],
        dtype=torch.float64,
    )
    for sampling_ratio in (-1, 2):
        assert torch.autograd.gradcheck(
            lambda x, sr=sampling_ratio: roi_align(x, rois, (2, 3), 1.0, sr, True, impl="torch"),
            (features,),
        )


@pytest.mark.skipif(torchvision_ops() is None, reason="torchvision does not import on this machine")
def test_roi_align_agrees_with_torchvision():
    gen = torch.Generator().manual_seed(5)
    features = torch.randn(2, 8, 20, 30, generator=gen)
    rois = random_rois(64, batch=2, height=20, width=30, seed=6).float()
    for sr, aligned in [(-1, True), (2, True), (2, False), (0, False)]:
        ours = roi_align(features, rois, 7, 0.25, sr, aligned, impl="torch")
        theirs = roi_align(features, rois, 7, 0.25, sr, aligned, impl="torchvision")
        assert torch.allclose(ours, theirs, atol=1e-5)


def test_fpn_level_assignment_rule():
    sides = torch.tensor([224.0, 112.0, 448.0, 896.0, 8.0, 223.0, 300.0], dtype=torch.float64)
    boxes = torch.stack((torch.zeros_like(sides), torch.zeros_like(sides), sides, sides), dim=1)
    levels = assign_fpn_levels(boxes, 2, 5)
    # floor(4 + log2(side / 224)) clamped to [2, 5].
    assert levels.tolist() == [4, 3, 5, 5, 2, 3, 4]


def test_multiscale_roi_align_pools_each_box_from_its_level():
    gen = torch.Generator().manual_seed(7)
    strides = [4, 8, 16, 32]
    features = [
        torch.randn(2, 3, 128 // s, 160 // s, generator=gen, dtype=torch.float64) for s in strides
    ]
    boxes = [
        torch.tensor([[0.0, 0.0, 30.0, 30.0], [10.0, 5.0, 120.0, 100.0]], dtype=torch.float64),
        torch.tensor([[20.0, 20.0, 160.0, 128.0], [50.0, 40.0, 70.0, 60.0]], dtype=torch.float64),
    ]
    pooler = MultiScaleRoIAlign(5, sampling_ratio=2)
    out = pooler(features, strides, boxes)
    assert out.shape == (4, 3, 5, 5)
    flat = torch.cat(boxes)
    images = [0, 0, 1, 1]
    for k in range(4):
        side = math.sqrt(float((flat[k, 2] - flat[k, 0]) * (flat[k, 3] - flat[k, 1])))
        level = min(max(math.floor(4 + math.log2(side / 224 + 1e-6)), 2), 5)
        rois = torch.cat(
            (torch.tensor([[float(images[k])]], dtype=torch.float64), flat[k : k + 1]), 1
        )
        expected = reference_roi_align(features[level - 2], rois, (5, 5), 1 / 2**level, 2, True)
        assert torch.allclose(out[k : k + 1], expected, atol=1e-12), k
    with pytest.raises(ValueError, match="powers of two"):
        pooler(features, [4, 8, 12, 32], boxes)


def test_half_precision_features_keep_full_precision_coordinates():
    gen = torch.Generator().manual_seed(8)
    features = torch.randn(1, 4, 50, 60, generator=gen).bfloat16()
    # 150.7 is not representable in bfloat16 (spacing 1.0 there): coordinates must stay fp32.
    boxes = [torch.tensor([[10.3, 20.1, 150.7, 180.2]])]
    expected = reference_roi_align(
        features.float(), torch.tensor([[0.0, 10.3, 20.1, 150.7, 180.2]]), (7, 7), 0.25, 2, True
    )
    out = roi_align(features, boxes, 7, 0.25, 2, impl="torch")
    assert out.dtype == torch.bfloat16
    assert torch.allclose(out.double(), expected, atol=2e-2)
    multi = MultiScaleRoIAlign(7, 2)([features], [4], boxes)
    assert torch.allclose(multi.double(), expected, atol=2e-2)
