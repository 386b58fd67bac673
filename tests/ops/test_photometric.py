"""Unsupervised-flow terms against float64 loop references and hand-made cases."""

from __future__ import annotations

import math

import torch

from drivemtl.ops.photometric import (
    border_mask,
    census_loss,
    census_transform,
    fb_consistency_mask,
    range_map,
    smoothness_2nd,
    soft_hamming,
)
from drivemtl.ops.warp import warp_by_flow


def _grey(image: torch.Tensor, y: int, x: int) -> float:
    if not (0 <= y < image.shape[-2] and 0 <= x < image.shape[-1]):
        return 0.0
    r, g, b = (float(image[0, c, y, x]) for c in range(3))
    return (0.2989 * r + 0.5870 * g + 0.1140 * b) * 255.0


def _census_ref(image: torch.Tensor, radius: int) -> list[list[list[float]]]:
    h, w = image.shape[-2:]
    out = []
    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            plane = []
            for y in range(h):
                row = []
                for x in range(w):
                    d = _grey(image, y + dy, x + dx) - _grey(image, y, x)
                    row.append(d / math.sqrt(0.81 + d * d))
                plane.append(row)
            out.append(plane)
    return out


def test_census_transform_and_hamming_against_loops() -> None:
    torch.manual_seed(0)
    a, b = torch.rand(1, 3, 5, 6, dtype=torch.float64), torch.rand(1, 3, 5, 6, dtype=torch.float64)
    ca, cb = census_transform(a, 1), census_transform(b, 1)
    torch.testing.assert_close(ca[0], torch.tensor(_census_ref(a, 1), dtype=torch.float64))
    ref = [[sum((float(ca[0, k, y, x]) - float(cb[0, k, y, x])) ** 2
                / (0.1 + (float(ca[0, k, y, x]) - float(cb[0, k, y, x])) ** 2) for k in range(9))
            for x in range(6)] for y in range(5)]  # fmt: skip
    torch.testing.assert_close(soft_hamming(ca, cb)[0, 0], torch.tensor(ref, dtype=torch.float64))


def test_census_is_blind_to_a_brightness_offset_inside_the_border() -> None:
    torch.manual_seed(1)
    image = torch.rand(1, 3, 12, 12, dtype=torch.float64) * 0.5
    brighter = image + 0.2  # every grey value + 0.2 * 255: differences unchanged
    inner = (slice(None), slice(None), slice(3, 9), slice(3, 9))
    torch.testing.assert_close(census_transform(image)[inner], census_transform(brighter)[inner])
    mask = torch.ones(1, 1, 12, 12, dtype=torch.float64)
    assert abs(float(census_loss(image, brighter, mask)) - 0.01**0.4) < 1e-9  # h = 0 inside


def test_census_loss_is_the_masked_mean_of_the_penalty() -> None:
    torch.manual_seed(2)
    a, b = (
        torch.rand(1, 3, 10, 11, dtype=torch.float64),
        torch.rand(1, 3, 10, 11, dtype=torch.float64),
    )
    mask = (torch.rand(1, 1, 10, 11) > 0.3).double()
    h = soft_hamming(census_transform(a), census_transform(b))
    total = count = 0.0
    for y in range(3, 7):
        for x in range(3, 8):
            if mask[0, 0, y, x]:
                total += (abs(float(h[0, 0, y, x])) + 0.01) ** 0.4
                count += 1
    assert math.isclose(float(census_loss(a, b, mask)), total / count, rel_tol=1e-12)
    assert border_mask(a, 3)[0, 0].sum() == 4 * 5


def test_second_order_smoothness_against_a_loop() -> None:
    torch.manual_seed(3)
    flow = torch.randn(1, 2, 6, 7, dtype=torch.float64)
    image = torch.rand(1, 3, 6, 7, dtype=torch.float64) * 0.02
    ref_x, ref_y, nx, ny = 0.0, 0.0, 0, 0
    for c in range(2):
        for y in range(6):
            for x in range(5):
                second = flow[0, c, y, x + 2] - 2 * flow[0, c, y, x + 1] + flow[0, c, y, x]
                edge = sum(abs(150 * float(image[0, k, y, x + 2] - image[0, k, y, x]))
                           for k in range(3)) / 3  # fmt: skip
                ref_x += math.exp(-edge) * math.sqrt(float(second) ** 2 + 1e-6)
                nx += 1
        for y in range(4):
            for x in range(7):
                second = flow[0, c, y + 2, x] - 2 * flow[0, c, y + 1, x] + flow[0, c, y, x]
                edge = sum(abs(150 * float(image[0, k, y + 2, x] - image[0, k, y, x]))
                           for k in range(3)) / 3  # fmt: skip
                ref_y += math.exp(-edge) * math.sqrt(float(second) ** 2 + 1e-6)
                ny += 1
    expected = (ref_x / nx + ref_y / ny) / 2
    assert math.isclose(float(smoothness_2nd(flow, image)), expected, rel_tol=1e-12)
    # an affine flow has zero second differences: on a flat image (weights 1) only the eps of
    # the robust L1 is left
    ys, xs = torch.meshgrid(torch.arange(6.0), torch.arange(7.0), indexing="ij")
    affine = torch.stack((0.3 * xs + 0.1 * ys, -0.2 * xs))[None].double()
    flat = torch.full_like(image, 0.5)
    assert abs(float(smoothness_2nd(affine, flat)) - 1e-3) < 1e-9


def test_range_map_of_zero_integer_and_half_pixel_shifts() -> None:
    zero = torch.zeros(1, 2, 3, 4, dtype=torch.float64)
    torch.testing.assert_close(range_map(zero), torch.ones(1, 1, 3, 4, dtype=torch.float64))
    shift = zero.clone()
    shift[:, 0] = 1.0  # every pixel lands one column to the right; the last column leaves
    expected = torch.ones(1, 1, 3, 4, dtype=torch.float64)
    expected[..., 0] = 0.0
    torch.testing.assert_close(range_map(shift), expected)
    half = zero.clone()
    half[:, 0] = 0.5  # half of each pixel stays, half moves right
    expected = torch.ones(1, 1, 3, 4, dtype=torch.float64)
    expected[..., 0] = 0.5
    torch.testing.assert_close(range_map(half), expected)


def test_forward_backward_consistency_marks_disagreeing_pixels() -> None:
    flow = torch.zeros(1, 2, 2, 2)
    flow[:, 0] = 3.0
    backward = -flow.clone()
    backward[0, 0, 1, 1] = 2.0  # disagrees: |3 + 2|^2 = 25 > 0.01 * (9 + 4) + 0.5
    backward[0, 0, 0, 1] = -2.5  # nearly agrees: 0.25 <= 0.01 * (9 + 6.25) + 0.5
    mask = fb_consistency_mask(flow, backward)
    assert mask[0, 0].tolist() == [[1.0, 1.0], [1.0, 0.0]]


def test_census_loss_of_a_correct_warp_is_lower_than_of_zero_flow() -> None:
    torch.manual_seed(4)
    frame2 = torch.nn.functional.avg_pool2d(torch.rand(1, 3, 24, 24), 3, 1, 1)
    flow = torch.zeros(1, 2, 24, 24)
    flow[:, 0] = 2.0  # frame 1 pixel p is frame 2 pixel p + (2, 0)
    frame1 = warp_by_flow(frame2, flow)
    mask = torch.zeros(1, 1, 24, 24)
    mask[..., :, :20] = 1.0  # where the warp stays inside frame 2
    right = census_loss(frame1, warp_by_flow(frame2, flow), mask)
    wrong = census_loss(frame1, frame2, mask)
    assert float(right) < 0.5 * float(wrong)


def test_census_loss_finds_a_sub_pixel_motion_and_its_sign_and_axes() -> None:
    """Frame 2 is a smooth float64 pattern moved by (u, v) = (1.5, -0.75) px: the census loss of
    frame 1 against frame 2 warped by the true flow is below zero flow, the negated flow and the
    flow with u / v swapped (the conventions a flow loss can get wrong)."""
    h, w, u, v = 28, 36, 1.5, -0.75
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float64),
                            torch.arange(w, dtype=torch.float64), indexing="ij")  # fmt: skip

    def pattern(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        grey = 0.5 + 0.2 * torch.sin(0.9 * x + 0.3 * y) + 0.15 * torch.cos(0.5 * y - 0.7 * x)
        return grey.expand(1, 3, h, w)

    frame1 = pattern(xs, ys)
    frame2 = pattern(xs - u, ys - v)  # frame 1 pixel p shows up at p + (u, v) in frame 2
    mask = torch.zeros(1, 1, h, w, dtype=torch.float64)
    mask[..., 4:-4, 4:-4] = 1.0

    def loss(du: float, dv: float) -> float:
        flow = torch.zeros(1, 2, h, w, dtype=torch.float64)
        flow[:, 0], flow[:, 1] = du, dv
        return float(census_loss(frame1, warp_by_flow(frame2, flow), mask))

    true = loss(u, v)
    assert true < 0.5 * min(loss(0.0, 0.0), loss(-u, -v), loss(v, u))
