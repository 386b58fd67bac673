"""Modulated deformable convolution v2 (Zhu et al. 2019) in pure PyTorch, torchvision's semantics.

Each kernel tap ``k`` of output position ``p0`` reads the input at ``p0 + p_k + Δp_k`` (``p_k`` is
the regular dilated grid, ``Δp_k`` a learned fractional offset) by bilinear interpolation with zero
padding - a corner outside the image contributes zero, so a sample is non-zero only where
``-1 < y < H`` and ``-1 < x < W`` - and multiplies it by a modulation scalar ``m_k``. The samples
form im2col columns ``[N, C * kh * kw, Ho * Wo]`` and the output is ``weight.view(O, -1) @ cols``
(per convolution group). We gather the columns with one ``F.grid_sample`` call per batch and offset
group (zero padding is exactly torchvision's corner rule), so autograd gives the gradients w.r.t.
input, offset, mask, weight and bias.

Channel layout (as ``torchvision.ops.deform_conv2d``): ``offset [N, 2 * G * kh * kw, Ho, Wo]`` holds,
per offset group ``g`` and tap ``k = i * kw + j``, the pair ``(dy, dx)`` at channels
``g * 2 * kh * kw + 2 * k + (0, 1)``; ``mask [N, G * kh * kw, Ho, Wo]`` holds ``m_k`` at
``g * kh * kw + k``. Offset group ``g`` deforms input channels ``[g * C / G, (g + 1) * C / G)``.
Convolution groups are inferred from ``weight.shape[1]`` and offset groups from the offset channels.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from drivemtl.ops._dispatch import use_torchvision

IntPair = int | tuple[int, int]


def _pair(value: IntPair) -> tuple[int, int]:
    if isinstance(value, int):
        return value, value
    first, second = value
    return int(first), int(second)


def _output_size(
    size: tuple[int, int],
    kernel: tuple[int, int],
    stride: tuple[int, int],
    padding: tuple[int, int],
    dilation: tuple[int, int],
) -> tuple[int, int]:
    """Spatial size of a convolution's output, as ``F.conv2d`` computes it."""
    return tuple(  # type: ignore[return-value]
        (s + 2 * p - (d * (k - 1) + 1)) // st + 1
        for s, k, st, p, d in zip(size, kernel, stride, padding, dilation, strict=True)
    )


def _check_shapes(
    input: Tensor,
    offset: Tensor,
    weight: Tensor,
    mask: Tensor | None,
    out_size: tuple[int, int],
) -> tuple[int, int]:
    """Validate the operands; return (convolution groups, offset groups)."""
    if input.dim() != 4 or offset.dim() != 4 or weight.dim() != 4:
        raise ValueError(
            "deform_conv2d: input, offset and weight must be 4-D, got "
            f"{tuple(input.shape)}, {tuple(offset.shape)}, {tuple(weight.shape)}"
        )
    batch, channels = input.shape[:2]
    out_channels, group_channels, kh, kw = weight.shape
    if (
        group_channels == 0
        or channels % group_channels
        or out_channels % (channels // group_channels)
    ):
        raise ValueError(
            f"deform_conv2d: weight {tuple(weight.shape)} does not fit {channels} input channels"
        )
    groups = channels // group_channels
    taps = kh * kw
    if offset.shape[1] == 0 or offset.shape[1] % (2 * taps):
        raise ValueError(
            f"deform_conv2d: offset channels {offset.shape[1]} must be a multiple of 2*kh*kw={2 * taps}"
        )
    offset_groups = offset.shape[1] // (2 * taps)
    if channels % offset_groups:
        raise ValueError(
            f"deform_conv2d: {channels} input channels not divisible by {offset_groups} offset groups"
        )
    expected = (batch, 2 * offset_groups * taps, *out_size)
    if tuple(offset.shape) != expected:
        raise ValueError(f"deform_conv2d: offset must be {expected}, got {tuple(offset.shape)}")
    if mask is not None and tuple(mask.shape) != (batch, offset_groups * taps, *out_size):
        raise ValueError(
            f"deform_conv2d: mask must be {(batch, offset_groups * taps, *out_size)}, "
            f"got {tuple(mask.shape)}"
        )
    return groups, offset_groups


def _sampling_grid(
    offset: Tensor,
    in_size: tuple[int, int],
    kernel: tuple[int, int],
    stride: tuple[int, int],
    padding: tuple[int, int],
    dilation: tuple[int, int],
) -> Tensor:
    """``grid_sample`` grid ``[N * G, kh * kw * Ho, Wo, 2]`` of every tap's deformed position.

    Pixel coordinates ``y = ho * sh - ph + i * dh + dy`` are normalised for
    ``align_corners=False`` (pixel ``y`` maps to ``(2y + 1) / H - 1``), which is defined for any size.
    """
    batch, _, out_h, out_w = offset.shape
    kh, kw = kernel
    taps = kh * kw
    offset = offset.reshape(batch, -1, taps, 2, out_h, out_w)  # [N, G, K, (dy, dx), Ho, Wo]
    options = {"device": offset.device, "dtype": offset.dtype}
    tap_y = (torch.arange(kh, **options) * dilation[0]).repeat_interleave(kw)  # [K]
    tap_x = (torch.arange(kw, **options) * dilation[1]).repeat(kh)
    base_y = torch.arange(out_h, **options) * stride[0] - padding[0]  # [Ho]
    base_x = torch.arange(out_w, **options) * stride[1] - padding[1]  # [Wo]
    y = offset[:, :, :, 0] + (tap_y[:, None, None] + base_y[:, None])  # [N, G, K, Ho, Wo]
    x = offset[:, :, :, 1] + (tap_x[:, None, None] + base_x)
    height, width = in_size
    grid = torch.stack(((2 * x + 1) / width - 1, (2 * y + 1) / height - 1), dim=-1)
    return grid.reshape(-1, taps * out_h, out_w, 2)


def _deformed_columns(
    input: Tensor,
    offset: Tensor,
    mask: Tensor | None,
    kernel: tuple[int, int],
    stride: tuple[int, int],
    padding: tuple[int, int],
    dilation: tuple[int, int],
) -> Tensor:
    """Modulated im2col columns ``[N, C * kh * kw, Ho * Wo]`` (channel-major, then tap)."""
    batch, channels, height, width = input.shape
    out_h, out_w = offset.shape[-2:]
    taps = kernel[0] * kernel[1]
    offset_groups = offset.shape[1] // (2 * taps)
    grid = _sampling_grid(offset, (height, width), kernel, stride, padding, dilation)
    grouped = input.reshape(batch * offset_groups, channels // offset_groups, height, width)
    samples = F.grid_sample(
        grouped, grid, mode="bilinear", padding_mode="zeros", align_corners=False
    )
    samples = samples.view(batch, offset_groups, -1, taps, out_h * out_w)  # [N, G, C/G, K, L]
    if mask is not None:
        samples = samples * mask.reshape(batch, offset_groups, 1, taps, out_h * out_w)
    return samples.reshape(batch, channels * taps, out_h * out_w)


def _deform_conv2d_torch(
    input: Tensor,
    offset: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    stride: tuple[int, int],
    padding: tuple[int, int],
    dilation: tuple[int, int],
    mask: Tensor | None,
    groups: int,
    out_size: tuple[int, int],
) -> Tensor:
    """Pure-PyTorch forward: deformed columns, then one batched matmul per convolution group."""
    kernel = (weight.shape[2], weight.shape[3])
    cols = _deformed_columns(input, offset, mask, kernel, stride, padding, dilation)
    batch, out_channels = input.shape[0], weight.shape[0]
    cols = cols.view(batch, groups, -1, cols.shape[-1])  # [N, groups, C/groups * K, L]
    out = weight.reshape(groups, out_channels // groups, -1) @ cols  # [N, groups, O/groups, L]
    out = out.reshape(batch, out_channels, *out_size)
    if bias is not None:
        out = out + bias.view(1, -1, 1, 1)
    return out


def deform_conv2d(
    input: Tensor,
    offset: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    stride: IntPair = 1,
    padding: IntPair = 0,
    dilation: IntPair = 1,
    mask: Tensor | None = None,
    impl: str = "auto",
) -> Tensor:
    """(Modulated) deformable convolution with ``torchvision.ops.deform_conv2d``'s semantics.

    ``input [N, C, H, W]``, ``offset [N, 2 * G * kh * kw, Ho, Wo]`` ((dy, dx) per tap, per offset
    group), ``weight [O, C / groups, kh, kw]``, optional ``bias [O]`` and ``mask
    [N, G * kh * kw, Ho, Wo]`` (``None``: DCNv1, every tap weighted 1). Returns ``[N, O, Ho, Wo]``.
    ``impl``: "auto" calls torchvision's kernel for CUDA tensors when it imports (the pure path
    stays the default on CPU), "torch" forces the pure version, "torchvision" requires the kernel.
    Half-precision inputs are sampled in float32 (fractional positions need the mantissa).
    """
    stride, padding, dilation = _pair(stride), _pair(padding), _pair(dilation)
    kernel = (weight.shape[-2], weight.shape[-1]) if weight.dim() == 4 else (0, 0)
    out_size = _output_size(tuple(input.shape[-2:]), kernel, stride, padding, dilation)
    groups, _ = _check_shapes(input, offset, weight, mask, out_size)
    tv_ops = use_torchvision(impl)
    if tv_ops is not None and (impl == "torchvision" or input.is_cuda):
        return tv_ops.deform_conv2d(input, offset, weight, bias, stride, padding, dilation, mask)
    half = input.dtype in (torch.float16, torch.bfloat16)
    if not half:
        return _deform_conv2d_torch(
            input, offset, weight, bias, stride, padding, dilation, mask, groups, out_size
        )
    out = _deform_conv2d_torch(
        input.float(),
        offset.float(),
        weight.float(),
        None if bias is None else bias.float(),
        stride,
        padding,
        dilation,
        None if mask is None else mask.float(),
        groups,
        out_size,
    )
    return out.to(input.dtype)


class DeformConv2dPack(nn.Module):
    """DCNv2 "pack": a plain convolution predicts the offsets (and masks) that deform the main one.

    ``conv_offset`` (same kernel, stride, padding and dilation as the main convolution) outputs
    ``2 * G * k * k`` offset channels followed, when ``modulated``, by ``G * k * k`` mask logits
    (mask = sigmoid). It is zero-initialised, as in mmcv's ``ModulatedDeformConv2dPack``, so at
    initialisation every offset is 0 and every mask is sigmoid(0) = 0.5: the modulated layer starts
    as exactly 0.5 x the plain convolution with the same weight, plus the bias (the mask is *not*
    rescaled by 2, matching mmcv / detectron2 and the DCNv2 paper). With ``modulated=False``
    (DCNv1) it starts as the plain convolution. The main weight and bias use ``nn.Conv2d``'s
    default initialisation.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: IntPair = 3,
        stride: IntPair = 1,
        padding: IntPair = 1,
        dilation: IntPair = 1,
        groups: int = 1,
        deform_groups: int = 1,
        bias: bool = True,
        modulated: bool = True,
        impl: str = "auto",
    ) -> None:
        super().__init__()
        if in_channels % groups or out_channels % groups or in_channels % deform_groups:
            raise ValueError(
                f"DeformConv2dPack: channels {in_channels}->{out_channels} do not fit "
                f"groups={groups}, deform_groups={deform_groups}"
            )
        self.kernel_size = _pair(kernel_size)
        self.stride, self.padding, self.dilation = _pair(stride), _pair(padding), _pair(dilation)
        self.groups, self.deform_groups = groups, deform_groups
        self.modulated, self.impl = modulated, impl
        kh, kw = self.kernel_size
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels // groups, kh, kw))
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        per_tap = 3 if modulated else 2
        self.conv_offset = nn.Conv2d(
            in_channels,
            per_tap * deform_groups * kh * kw,
            self.kernel_size,
            self.stride,
            self.padding,
            self.dilation,
            bias=True,
        )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """``nn.Conv2d``'s default init for the main convolution; zeros for ``conv_offset``."""
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            fan_in = self.weight.shape[1] * self.weight.shape[2] * self.weight.shape[3]
            bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
            nn.init.uniform_(self.bias, -bound, bound)
        nn.init.zeros_(self.conv_offset.weight)
        nn.init.zeros_(self.conv_offset.bias)

    def offsets_and_mask(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        """Predicted ``offset [N, 2Gk², Ho, Wo]`` and ``mask [N, Gk², Ho, Wo]`` (None for DCNv1)."""
        out = self.conv_offset(x)
        num_offsets = 2 * self.deform_groups * self.kernel_size[0] * self.kernel_size[1]
        if not self.modulated:
            return out, None
        return out[:, :num_offsets], torch.sigmoid(out[:, num_offsets:])

    def forward(self, x: Tensor) -> Tensor:
        offset, mask = self.offsets_and_mask(x)
        return deform_conv2d(
            x,
            offset,
            self.weight,
            self.bias,
            self.stride,
            self.padding,
            self.dilation,
            mask,
            impl=self.impl,
        )

    def extra_repr(self) -> str:
        return (
            f"{self.weight.shape[1] * self.groups}, {self.weight.shape[0]}, "
            f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, "
            f"dilation={self.dilation}, groups={self.groups}, deform_groups={self.deform_groups}, "
            f"modulated={self.modulated}"
        )
