"""Multi-scale RoIAlign for exported RoI graphs: every box pooled from its FPN level.

In PyTorch it runs `drivemtl.ops.roi_align` (so values equal `MultiScaleRoIAlign`'s); traced for
ONNX it becomes the standard `RoiAlign` operator (opset >= 16, `half_pixel` for aligned boxes).
Every level pools every box and the box's own level is selected with `where`, which is exact and
needs no data-dependent indexing in the graph.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from drivemtl.ops.roi_align import MultiScaleRoIAlign, assign_fpn_levels, roi_align


class _RoIAlign(torch.autograd.Function):
    """`roi_align` over [R, 5] RoIs, exported as one ONNX `RoiAlign` node."""

    @staticmethod
    def forward(ctx, x, rois, output_size, spatial_scale, sampling_ratio, aligned):
        return roi_align(x, rois, output_size, spatial_scale, sampling_ratio, aligned)

    @staticmethod
    def symbolic(g, x, rois, output_size, spatial_scale, sampling_ratio, aligned):
        boxes = g.op(
            "Slice",
            rois,
            g.op("Constant", value_t=torch.tensor([1])),
            g.op("Constant", value_t=torch.tensor([5])),
            g.op("Constant", value_t=torch.tensor([1])),
        )
        index = g.op("Gather", rois, g.op("Constant", value_t=torch.tensor(0)), axis_i=1)
        index = g.op("Cast", index, to_i=7)  # int64 batch indices
        return g.op(
            "RoiAlign",
            x,
            boxes,
            index,
            output_height_i=output_size[0],
            output_width_i=output_size[1],
            sampling_ratio_i=sampling_ratio,
            spatial_scale_f=spatial_scale,
            mode_s="avg",
            coordinate_transformation_mode_s="half_pixel" if aligned else "output_half_pixel",
        )


def multiscale_roi_align(
    pooler: MultiScaleRoIAlign, maps: Sequence[Tensor], strides: Sequence[int], rois: Tensor
) -> Tensor:
    """[R, C, h, w] features of `rois` [R, 5] (batch index, x1, y1, x2, y2) in input pixels, each
    from the level `pooler` assigns it (same levels and values as `pooler(maps, strides, ...)`)."""
    levels = [int(s).bit_length() - 1 for s in strides]
    sampling = int(pooler.sampling_ratio)
    size = tuple(int(v) for v in pooler.output_size)
    if len(maps) == 1:
        return _RoIAlign.apply(maps[0], rois, size, 1.0 / strides[0], sampling, pooler.aligned)
    assigned = assign_fpn_levels(
        rois[:, 1:], levels[0], levels[-1], pooler.canonical_scale, pooler.canonical_level
    )
    result = None
    for level, feature, stride in zip(levels, maps, strides, strict=True):
        pooled = _RoIAlign.apply(feature, rois, size, 1.0 / stride, sampling, pooler.aligned)
        if result is None:
            result = pooled
        else:
            result = torch.where((assigned == level).view(-1, 1, 1, 1), pooled, result)
    return result
