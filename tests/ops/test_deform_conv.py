import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from drivemtl.ops.deform_conv import DeformConv2dPack, deform_conv2d


def _bilinear_zero(feature: np.ndarray, y: float, x: float) -> np.ndarray:
    """Bilinear sample with zero padding: only corners inside the image contribute (float64)."""
    _, height, width = feature.shape
    if not (-1.0 < y < height and -1.0 < x < width):
        return np.zeros(feature.shape[0])
    y0, x0 = math.floor(y), math.floor(x)
    ly, lx = y - y0, x - x0
    value = np.zeros(feature.shape[0])
    for cy, wy in ((y0, 1.0 - ly), (y0 + 1, ly)):
        for cx, wx in ((x0, 1.0 - lx), (x0 + 1, lx)):
            if 0 <= cy < height and 0 <= cx < width:
                value += wy * wx * feature[:, cy, cx]
    return value


def reference_deform_conv(inp, offset, weight, bias, stride, padding, dilation, mask):
    """Loop-by-loop modulated deformable convolution (torchvision's layout) in float64."""
    inp, offset, weight = (t.detach().double().numpy() for t in (inp, offset, weight))
    batch, channels, _, _ = inp.shape
    out_ch, group_ch, kh, kw = weight.shape
    groups, taps = channels // group_ch, kh * kw
    offset_groups = offset.shape[1] // (2 * taps)
    out_h, out_w = offset.shape[-2:]
    mask = (
        np.ones((batch, offset_groups * taps, out_h, out_w))
        if mask is None
        else mask.detach().double().numpy()
    )
    out = np.zeros((batch, out_ch, out_h, out_w))
    per_og = channels // offset_groups
    for n in range(batch):
        for ho in range(out_h):
            for wo in range(out_w):
                cols = np.zeros((channels, kh, kw))
                for g in range(offset_groups):
                    feature = inp[n, g * per_og : (g + 1) * per_og]
                    for i in range(kh):
                        for j in range(kw):
                            k = i * kw + j
                            dy = offset[n, g * 2 * taps + 2 * k, ho, wo]
                            dx = offset[n, g * 2 * taps + 2 * k + 1, ho, wo]
                            y = ho * stride[0] - padding[0] + i * dilation[0] + dy
                            x = wo * stride[1] - padding[1] + j * dilation[1] + dx
                            m = mask[n, g * taps + k, ho, wo]
                            cols[g * per_og : (g + 1) * per_og, i, j] = m * _bilinear_zero(
                                feature, y, x
                            )
                for o in range(out_ch):
                    gi = o // (out_ch // groups)
                    patch = cols[gi * group_ch : (gi + 1) * group_ch]
                    out[n, o, ho, wo] = np.sum(patch * weight[o])
    if bias is not None:
        out += bias.detach().double().numpy()[None, :, None, None]
    return torch.from_numpy(out)


def _out_size(size, k, s, p, d):
    return (size + 2 * p - (d * (k - 1) + 1)) // s + 1


def _random_case(seed, n, c, o, hw, k, stride, padding, dilation, groups, offset_groups, scale):
    gen = torch.Generator().manual_seed(seed)
    height, width = hw
    ho = _out_size(height, k, stride, padding, dilation)
    wo = _out_size(width, k, stride, padding, dilation)
    inp = torch.randn(n, c, height, width, generator=gen, dtype=torch.float64)
    offset = scale * torch.randn(
        n, 2 * offset_groups * k * k, ho, wo, generator=gen, dtype=torch.float64
    )
    mask = torch.rand(n, offset_groups * k * k, ho, wo, generator=gen, dtype=torch.float64)
    weight = torch.randn(o, c // groups, k, k, generator=gen, dtype=torch.float64)
    bias = torch.randn(o, generator=gen, dtype=torch.float64)
    return inp, offset, weight, bias, mask


CASES = [
    # seed, n, c, o, hw, k, stride, padding, dilation, groups, offset_groups, offset scale
    (0, 2, 3, 4, (5, 6), 3, 1, 1, 1, 1, 1, 0.7),
    (1, 1, 4, 2, (7, 6), 3, 2, 1, 1, 1, 1, 1.5),
    (2, 1, 4, 4, (7, 7), 3, 1, 2, 2, 2, 1, 0.9),
    (3, 2, 4, 6, (6, 5), 3, 1, 1, 1, 1, 2, 1.2),
    (4, 1, 4, 4, (6, 7), 2, 2, 0, 1, 2, 2, 0.6),
    (5, 1, 2, 3, (4, 5), 3, 1, 1, 1, 1, 1, 4.0),  # far out-of-range offsets
]


@pytest.mark.parametrize("case", CASES)
def test_matches_loop_reference(case):
    seed, n, c, o, hw, k, stride, padding, dilation, groups, offset_groups, scale = case
    inp, offset, weight, bias, mask = _random_case(
        seed, n, c, o, hw, k, stride, padding, dilation, groups, offset_groups, scale
    )
    args = ((stride, stride), (padding, padding), (dilation, dilation))
    expected = reference_deform_conv(inp, offset, weight, bias, *args, mask)
    got = deform_conv2d(inp, offset, weight, bias, stride, padding, dilation, mask, impl="torch")
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-10)
    expected_v1 = reference_deform_conv(inp, offset, weight, None, *args, None)
    got_v1 = deform_conv2d(inp, offset, weight, None, stride, padding, dilation, impl="torch")
    torch.testing.assert_close(got_v1, expected_v1, rtol=0, atol=1e-10)


def test_integer_and_boundary_offsets_follow_corner_rule():
    """Offsets landing exactly on -1, H and integer pixels: zero outside, exact pixels inside."""
    inp = torch.arange(1.0, 13.0, dtype=torch.float64).view(1, 1, 3, 4)
    weight = torch.ones(1, 1, 1, 1, dtype=torch.float64)
    for dy, dx in [
        (-1.0, 0.0),
        (3.0, 0.0),
        (0.0, -1.0),
        (0.0, 4.0),
        (1.0, 2.0),
        (-0.5, 0.0),
        (2.5, 3.5),
    ]:
        offset = torch.tensor([dy, dx], dtype=torch.float64).view(1, 2, 1, 1).expand(1, 2, 3, 4)
        got = deform_conv2d(inp, offset.contiguous(), weight, impl="torch")
        expected = reference_deform_conv(inp, offset, weight, None, (1, 1), (0, 0), (1, 1), None)
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize(
    ("stride", "padding", "dilation", "groups"),
    [(1, 1, 1, 1), (2, 1, 1, 2), (1, 2, 2, 1), (2, 0, 1, 4)],
)
def test_zero_offset_unit_mask_equals_conv2d(stride, padding, dilation, groups):
    gen = torch.Generator().manual_seed(7)
    inp = torch.randn(2, 4, 9, 11, generator=gen, dtype=torch.float64)
    weight = torch.randn(8, 4 // groups, 3, 3, generator=gen, dtype=torch.float64)
    bias = torch.randn(8, generator=gen, dtype=torch.float64)
    expected = F.conv2d(inp, weight, bias, stride, padding, dilation, groups)
    ho, wo = expected.shape[-2:]
    offset = torch.zeros(2, 2 * 2 * 9, ho, wo, dtype=torch.float64)  # two offset groups
    mask = torch.ones(2, 2 * 9, ho, wo, dtype=torch.float64)
    got = deform_conv2d(inp, offset, weight, bias, stride, padding, dilation, mask, impl="torch")
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-10)


def test_gradcheck_all_operands():
    gen = torch.Generator().manual_seed(3)
    inp = torch.randn(1, 2, 4, 4, generator=gen, dtype=torch.float64, requires_grad=True)
    # Fractional parts in [0.1, 0.9]: bilinear sampling is not differentiable on grid lines.
    whole = torch.randint(-2, 3, (1, 2 * 2 * 4, 4, 4), generator=gen).double()
    frac = torch.rand(1, 2 * 2 * 4, 4, 4, generator=gen, dtype=torch.float64) * 0.8 + 0.1
    offset = (whole + frac).requires_grad_()
    mask = torch.rand(1, 2 * 4, 4, 4, generator=gen, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(2, 2, 2, 2, generator=gen, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(2, generator=gen, dtype=torch.float64, requires_grad=True)

    def fn(i, off, m, w, b):
        return deform_conv2d(i, off, w, b, 1, 1, 2, m, impl="torch")

    assert torch.autograd.gradcheck(fn, (inp, offset, mask, weight, bias), eps=1e-6, atol=1e-6)


def test_pack_starts_as_half_conv_with_zero_offset_conv():
    torch.manual_seed(0)
    layer = DeformConv2dPack(4, 6, kernel_size=3, stride=2, padding=1, groups=2, deform_groups=2)
    assert torch.count_nonzero(layer.conv_offset.weight) == 0
    assert torch.count_nonzero(layer.conv_offset.bias) == 0
    assert layer.conv_offset.out_channels == 3 * 2 * 9
    x = torch.randn(2, 4, 9, 10)
    offset, mask = layer.offsets_and_mask(x)
    assert torch.count_nonzero(offset) == 0
    torch.testing.assert_close(mask, torch.full_like(mask, 0.5))
    expected = 0.5 * F.conv2d(x, layer.weight, None, 2, 1, 1, 2) + layer.bias.view(1, -1, 1, 1)
    torch.testing.assert_close(layer(x), expected, rtol=1e-5, atol=1e-5)
    out = layer(x)
    out.sum().backward()
    assert layer.conv_offset.weight.grad is not None
    assert torch.count_nonzero(layer.conv_offset.weight.grad) > 0


def test_pack_unmodulated_starts_as_conv():
    layer = DeformConv2dPack(3, 5, kernel_size=3, padding=1, modulated=False)
    x = torch.randn(1, 3, 6, 7)
    assert layer.conv_offset.out_channels == 2 * 9
    expected = F.conv2d(x, layer.weight, layer.bias, 1, 1)
    torch.testing.assert_close(layer(x), expected, rtol=1e-5, atol=1e-5)


def test_half_precision_input_returns_half():
    inp = torch.randn(1, 2, 5, 5).bfloat16()
    weight = torch.randn(3, 2, 3, 3).bfloat16()
    offset = torch.randn(1, 18, 5, 5).bfloat16()
    out = deform_conv2d(inp, offset, weight, padding=1, impl="torch")
    assert out.dtype == torch.bfloat16
    expected = deform_conv2d(inp.float(), offset.float(), weight.float(), padding=1, impl="torch")
    torch.testing.assert_close(out.float(), expected, rtol=2e-2, atol=2e-2)


def test_shape_errors():
    inp = torch.randn(1, 4, 5, 5)
    weight = torch.randn(2, 4, 3, 3)
    with pytest.raises(ValueError, match="multiple of 2"):
        deform_conv2d(inp, torch.zeros(1, 17, 3, 3), weight, impl="torch")
    with pytest.raises(ValueError, match="offset must be"):
        deform_conv2d(inp, torch.zeros(1, 18, 5, 5), weight, impl="torch")
    with pytest.raises(ValueError, match="mask must be"):
        deform_conv2d(
            inp, torch.zeros(1, 18, 3, 3), weight, mask=torch.ones(1, 8, 3, 3), impl="torch"
        )
    with pytest.raises(ValueError, match="offset groups"):
        deform_conv2d(inp, torch.zeros(1, 54, 3, 3), weight, impl="torch")
    with pytest.raises(ValueError, match="impl must be"):
        deform_conv2d(inp, torch.zeros(1, 18, 3, 3), weight, impl="cuda")


def test_dispatch_keeps_pure_path_on_cpu(monkeypatch):
    calls = []

    class FakeOps:
        @staticmethod
        def deform_conv2d(*args):
            calls.append(args)
            return torch.zeros(1)

    import drivemtl.ops.deform_conv as module

    monkeypatch.setattr(
        module, "use_torchvision", lambda impl: None if impl == "torch" else FakeOps
    )
    inp, weight = torch.randn(1, 2, 4, 4), torch.randn(3, 2, 3, 3)
    offset = torch.zeros(1, 18, 2, 2)
    assert deform_conv2d(inp, offset, weight, impl="auto").shape == (1, 3, 2, 2)
    assert not calls
    deform_conv2d(inp, offset, weight, impl="torchvision")
    assert len(calls) == 1
