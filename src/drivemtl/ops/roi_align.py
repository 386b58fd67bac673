"""RoIAlign (He et al. 2017) with torchvision's exact semantics, fast on CPU, in pure PyTorch.

Every output bin averages ``grid_h x grid_w`` bilinear samples and each sample touches four pixels,
so a bin is a weighted sum of feature-map rows. We compute the (pixel index, weight) taps of every
bin - vectorised per distinct sampling-grid size - and evaluate all bins in a single
``F.embedding_bag(mode="sum", per_sample_weights=...)``: a sparse gather-and-sum that never
materialises a [bins, pixels] matrix, and whose autograd scatters gradients back to the feature
map. Samples outside ``[-1, H] x [-1, W]`` contribute zero and samples in ``[-1, 0)`` are clamped
to the border, as in torchvision's C++ kernel.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from drivemtl.ops._dispatch import use_torchvision
from drivemtl.ops.boxes import box_area

RoIs = Tensor | Sequence[Tensor]


def _pair(size: int | tuple[int, int]) -> tuple[int, int]:
    if isinstance(size, int):
        return size, size
    height, width = size
    return int(height), int(width)


def rois_to_tensor(rois: RoIs, like: Tensor) -> Tensor:
    """Normalise RoIs to ``[K, 5]`` rows of (batch index, x1, y1, x2, y2) in ``like``'s dtype."""
    if isinstance(rois, Tensor):
        if rois.dim() != 2 or rois.shape[1] != 5:
            raise ValueError(
                f"roi_align: rois tensor must be [K, 5] (batch, x1, y1, x2, y2), got {tuple(rois.shape)}"
            )
        return rois.to(device=like.device, dtype=like.dtype)
    rows = []
    for image_index, boxes in enumerate(rois):
        if boxes.dim() != 2 or boxes.shape[1] != 4:
            raise ValueError(
                f"roi_align: boxes of image {image_index} must be [Ki, 4], got {tuple(boxes.shape)}"
            )
        boxes = boxes.to(device=like.device, dtype=like.dtype)
        batch = torch.full_like(boxes[:, :1], float(image_index))
        rows.append(torch.cat((batch, boxes), dim=1))
    if not rows:
        return like.new_zeros((0, 5))
    return torch.cat(rows)


def _axis_samples(
    start: Tensor, bin_size: Tensor, bins: int, grid: int, size: int
) -> tuple[Tensor, Tensor]:
    """Pixel indices and bilinear weights along one axis: both ``[K, bins, grid, 2]``.

    The two entries of the last axis are the low and high neighbours; a sample outside
    ``[-1, size]`` gets zero weight (so the whole 2-D sample vanishes, as in torchvision).
    """
    dtype = start.dtype
    bin_index = torch.arange(bins, device=start.device, dtype=dtype).view(1, bins, 1)
    sub = (torch.arange(grid, device=start.device, dtype=dtype) + 0.5).view(1, 1, grid)
    # Same operation order as torchvision's kernel: start + p * bin + (i + 0.5) * bin / grid.
    bin_size = bin_size.view(-1, 1, 1)
    coord = start.view(-1, 1, 1) + bin_index * bin_size + sub * bin_size / grid
    valid = (coord >= -1.0) & (coord <= size)
    coord = coord.clamp(min=0)
    low = coord.floor().long()
    at_edge = low >= size - 1
    low = torch.where(at_edge, torch.full_like(low, size - 1), low)
    high = torch.where(at_edge, low, low + 1)
    coord = torch.where(at_edge, low.to(dtype), coord)
    frac = coord - low.to(dtype)
    weights = torch.stack((1.0 - frac, frac), dim=-1) * valid.unsqueeze(-1).to(dtype)
    return torch.stack((low, high), dim=-1), weights


def _roi_align_torch(
    input: Tensor,
    rois: Tensor,
    output_size: tuple[int, int],
    spatial_scale: float,
    sampling_ratio: int,
    aligned: bool,
) -> Tensor:
    batch, channels, height, width = input.shape
    out_h, out_w = output_size
    num_rois = rois.shape[0]
    rois = rois.detach()
    offset = 0.5 if aligned else 0.0
    start_x = rois[:, 1] * spatial_scale - offset
    start_y = rois[:, 2] * spatial_scale - offset
    roi_w = rois[:, 3] * spatial_scale - offset - start_x
    roi_h = rois[:, 4] * spatial_scale - offset - start_y
    if not aligned:
        roi_w = roi_w.clamp(min=1.0)
        roi_h = roi_h.clamp(min=1.0)
    bin_w = roi_w / out_w
    bin_h = roi_h / out_h
    if sampling_ratio > 0:
        grid_h = torch.full((num_rois,), sampling_ratio, dtype=torch.long, device=rois.device)
        grid_w = grid_h
    else:
        grid_h = torch.ceil(roi_h / out_h).clamp(min=0).long()
        grid_w = torch.ceil(roi_w / out_w).clamp(min=0).long()

    # [N*H*W, C] rows, one per pixel. The channels-last copy is ~3x faster than permute+contiguous
    # and free when the input is channels-last already.
    flat = (
        input.contiguous(memory_format=torch.channels_last)
        .permute(0, 2, 3, 1)
        .view(batch * height * width, channels)
    )
    image = rois[:, 0].long()
    if bool(((image < 0) | (image >= batch)).any()):
        raise ValueError(
            f"roi_align: roi batch indices must lie in [0, {batch}), got {image.unique().tolist()}"
        )
    bins = out_h * out_w
    taps_per_bin = torch.zeros((num_rois, bins), dtype=torch.long, device=rois.device)
    indices: list[Tensor] = []
    weights: list[Tensor] = []
    order: list[Tensor] = []
    key = grid_h * (int(grid_w.max()) + 1 if num_rois else 1) + grid_w
    for value in torch.unique(key).tolist():
        members = torch.nonzero(key == value).squeeze(1)
        gh, gw = int(grid_h[members[0]]), int(grid_w[members[0]])
        order.append(members)
        if gh == 0 or gw == 0:
            continue  # empty sampling grid (degenerate aligned box): empty bags pool to zero
        y_idx, y_wt = _axis_samples(start_y[members], bin_h[members], out_h, gh, height)
        x_idx, x_wt = _axis_samples(start_x[members], bin_w[members], out_w, gw, width)
        # Broadcast to [Kg, out_h, out_w, gh, gw, 2 (y corner), 2 (x corner)].
        base = (image[members] * (height * width)).view(-1, 1, 1, 1, 1, 1, 1)
        index = (
            base + y_idx[:, :, None, :, None, :, None] * width + x_idx[:, None, :, None, :, None, :]
        )
        weight = y_wt[:, :, None, :, None, :, None] * x_wt[:, None, :, None, :, None, :] / (gh * gw)
        indices.append(index.reshape(-1))
        weights.append(weight.reshape(-1))
        taps_per_bin[members] = gh * gw * 4
    ordered = torch.cat(order) if order else image[:0]
    sizes = taps_per_bin[ordered].reshape(-1)
    offsets = torch.cumsum(sizes, 0) - sizes
    if indices:
        pooled = F.embedding_bag(
            torch.cat(indices), flat, offsets, mode="sum", per_sample_weights=torch.cat(weights)
        )
    else:
        pooled = flat.new_zeros((num_rois * bins, channels))
    pooled = pooled.view(num_rois, bins, channels)
    if len(order) > 1:
        pooled = pooled[torch.argsort(ordered)]
    # Contiguous NCHW like torchvision's kernel, so callers may .view() the result.
    return pooled.transpose(1, 2).contiguous().view(num_rois, channels, out_h, out_w)


def roi_align(
    input: Tensor,
    rois: RoIs,
    output_size: int | tuple[int, int],
    spatial_scale: float = 1.0,
    sampling_ratio: int = -1,
    aligned: bool = True,
    impl: str = "auto",
) -> Tensor:
    """Pool ``input [N, C, H, W]`` inside each RoI to ``[K, C, out_h, out_w]``.

    ``rois`` is ``[K, 5]`` (batch index, x1, y1, x2, y2) or a per-image list of ``[Ki, 4]`` boxes, in
    input-image coordinates scaled by ``spatial_scale``. ``sampling_ratio <= 0`` picks
    ``ceil(roi_size / output_size)`` samples per bin; ``aligned=True`` shifts by -0.5 pixel.
    ``impl``: "auto" uses torchvision's kernel when it imports, "torch" forces the pure version.
    """
    if input.dim() != 4:
        raise ValueError(f"roi_align: input must be [N, C, H, W], got {tuple(input.shape)}")
    size = _pair(output_size)
    tv_ops = use_torchvision(impl)
    if tv_ops is not None:
        rois_tensor = rois_to_tensor(rois, input)
        return tv_ops.roi_align(input, rois_tensor, size, spatial_scale, sampling_ratio, aligned)
    # Half-precision sample coordinates would be off by whole pixels on large maps: pool in fp32.
    half = input.dtype in (torch.float16, torch.bfloat16)
    features = input.float() if half else input
    rois_tensor = rois_to_tensor(rois, features)
    pooled = _roi_align_torch(
        features, rois_tensor, size, float(spatial_scale), int(sampling_ratio), aligned
    )
    return pooled.to(input.dtype) if half else pooled


def assign_fpn_levels(
    boxes: Tensor,
    min_level: int,
    max_level: int,
    canonical_scale: float = 224.0,
    canonical_level: int = 4,
    eps: float = 1e-6,
) -> Tensor:
    """FPN level of each box (Lin et al. 2017, eq. 1): ``floor(k0 + log2(sqrt(area) / s0))``, clamped.

    Returns levels in ``[min_level, max_level]`` as a long tensor ``[K]``.
    """
    scale = torch.sqrt(box_area(boxes).clamp(min=0))
    levels = torch.floor(canonical_level + torch.log2(scale / canonical_scale + eps))
    return levels.clamp(min=min_level, max=max_level).long()


class MultiScaleRoIAlign(nn.Module):
    """RoIAlign over FPN levels: each box is pooled from the level its size maps to.

    ``forward(features, strides, boxes)`` takes the FPN maps (finest first), their strides (powers
    of two) and per-image ``[Ki, 4]`` boxes; returns ``[sum Ki, C, out_h, out_w]`` in box order.
    """

    def __init__(
        self,
        output_size: int | tuple[int, int],
        sampling_ratio: int = 2,
        canonical_scale: float = 224.0,
        canonical_level: int = 4,
        aligned: bool = True,
    ) -> None:
        super().__init__()
        self.output_size = _pair(output_size)
        self.sampling_ratio = int(sampling_ratio)
        self.canonical_scale = float(canonical_scale)
        self.canonical_level = int(canonical_level)
        self.aligned = aligned

    def forward(
        self, features: Sequence[Tensor], strides: Sequence[int], boxes: Sequence[Tensor]
    ) -> Tensor:
        """Pool every box from its assigned level (see class docstring)."""
        if len(features) != len(strides) or not features:
            raise ValueError(
                f"MultiScaleRoIAlign: got {len(features)} feature maps and {len(strides)} strides"
            )
        levels = [math.log2(s) for s in strides]
        if any(abs(lv - round(lv)) > 1e-6 for lv in levels):
            raise ValueError(
                f"MultiScaleRoIAlign: strides must be powers of two, got {list(strides)}"
            )
        levels_int = [round(lv) for lv in levels]
        if levels_int != list(range(levels_int[0], levels_int[0] + len(levels_int))):
            raise ValueError(
                f"MultiScaleRoIAlign: strides must be consecutive powers of two, got {list(strides)}"
            )
        reference = features[0]
        # Box coordinates stay at least fp32 even for half-precision features.
        coord_dtype = torch.promote_types(reference.dtype, torch.float32)
        rois = rois_to_tensor(boxes, reference.new_empty(0, dtype=coord_dtype))
        out_h, out_w = self.output_size
        channels = reference.shape[1]
        if len(features) == 1:
            return roi_align(
                reference,
                rois,
                self.output_size,
                1.0 / strides[0],
                self.sampling_ratio,
                self.aligned,
            )
        assigned = assign_fpn_levels(
            rois[:, 1:], levels_int[0], levels_int[-1], self.canonical_scale, self.canonical_level
        )
        result = reference.new_zeros((rois.shape[0], channels, out_h, out_w))
        for level, feature, stride in zip(levels_int, features, strides, strict=True):
            members = torch.nonzero(assigned == level).squeeze(1)
            if members.numel() == 0:
                continue
            pooled = roi_align(
                feature,
                rois[members],
                self.output_size,
                1.0 / stride,
                self.sampling_ratio,
                self.aligned,
            )
            result = result.index_copy(0, members, pooled.to(result.dtype))
        return result
