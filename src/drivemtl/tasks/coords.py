"""Map network outputs from (padded, transformed) input coordinates back to the original image.

The data pipeline applies, in order: resize by `meta.scale = (sy, sx)`, crop at `meta.crop =
(y0, x0)` (in resized pixels) to the current image size, then an optional horizontal flip. These
functions undo the three steps for dense maps, boxes and points.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from drivemtl.structures.sample import SampleMeta


def _resized_size(meta: SampleMeta) -> tuple[int, int]:
    height, width = meta.orig_size
    sy, sx = meta.scale
    return round(height * sy), round(width * sx)


def dense_to_original(
    values: Tensor,
    meta: SampleMeta,
    image_size: tuple[int, int],
    mode: str = "bilinear",
    fill: float = 0.0,
) -> Tensor:
    """[C, H, W] map over the padded input -> [C, orig_h, orig_w] over the original image.

    Padding is cut off, a flip undone, the crop placed back into the resized frame (areas outside
    the crop get `fill`) and the result resized to `meta.orig_size` with `mode` ("bilinear" for
    scores, "nearest" for labels).
    """
    if values.dim() != 3:
        raise ValueError(f"dense_to_original expects [C, H, W], got {tuple(values.shape)}")
    h, w = image_size
    out = values[:, :h, :w]
    if meta.flipped:
        out = torch.flip(out, dims=(-1,))
    resized = _resized_size(meta)
    y0, x0 = meta.crop
    if (y0, x0) != (0, 0) or (h, w) != resized:
        canvas = out.new_full((out.shape[0], *resized), fill)
        ys, xs = (
            slice(max(y0, 0), min(y0 + h, resized[0])),
            slice(max(x0, 0), min(x0 + w, resized[1])),
        )
        canvas[:, ys, xs] = out[:, ys.start - y0 : ys.stop - y0, xs.start - x0 : xs.stop - x0]
        out = canvas
    if tuple(out.shape[-2:]) != tuple(meta.orig_size):
        kwargs = {"align_corners": False} if mode in ("bilinear", "bicubic") else {}
        dtype = out.dtype
        out = F.interpolate(out[None].float(), size=meta.orig_size, mode=mode, **kwargs)[0]
        out = out.to(dtype)
    return out


def points_to_original(points: Tensor, meta: SampleMeta, image_size: tuple[int, int]) -> Tensor:
    """[..., 2] (x, y) pixel coordinates of the input image -> coordinates in the original image."""
    x = points[..., 0]
    y = points[..., 1]
    if meta.flipped:
        x = image_size[1] - x
    sy, sx = meta.scale
    y0, x0 = meta.crop
    return torch.stack(((x + x0) / sx, (y + y0) / sy), dim=-1)


def boxes_to_original(boxes: Tensor, meta: SampleMeta, image_size: tuple[int, int]) -> Tensor:
    """[N, 4] xyxy boxes of the input image -> xyxy boxes in the original image, clipped to it."""
    corners = points_to_original(boxes.reshape(-1, 2, 2), meta, image_size)
    x1 = torch.minimum(corners[:, 0, 0], corners[:, 1, 0])
    x2 = torch.maximum(corners[:, 0, 0], corners[:, 1, 0])
    height, width = meta.orig_size
    out = torch.stack((x1, corners[:, 0, 1], x2, corners[:, 1, 1]), dim=-1)
    out[:, 0::2] = out[:, 0::2].clamp(0, width)
    out[:, 1::2] = out[:, 1::2].clamp(0, height)
    return out
