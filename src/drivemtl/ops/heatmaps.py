"""Point heatmaps: Gaussian targets, arg-max decoding with sub-pixel refinement, peak picking.

Coordinates are (x, y) in heatmap pixels, pixel centres at integers (pixel ``j`` spans
``[j - 0.5, j + 0.5]``). Used by pose (per-joint maps) and centre-point heads.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def gaussian_heatmaps(
    points: Tensor,
    size: tuple[int, int],
    sigma: float,
    visible: Tensor | None = None,
) -> Tensor:
    """Render ``exp(-d^2 / (2 sigma^2))`` around each point: ``[..., J, 2] -> [..., J, H, W]``.

    ``size = (H, W)``; points flagged invisible (``visible [..., J]`` False) or non-finite give an
    all-zero map. The peak is 1 exactly when the point lies on a pixel centre.
    """
    if points.shape[-1] != 2:
        raise ValueError(
            f"gaussian_heatmaps: points must be [..., 2] (x, y), got {tuple(points.shape)}"
        )
    if sigma <= 0:
        raise ValueError(f"gaussian_heatmaps: sigma must be positive, got {sigma}")
    height, width = size
    dtype = points.dtype if points.is_floating_point() else torch.float32
    points = points.to(dtype)
    finite = torch.isfinite(points).all(dim=-1)
    keep = finite if visible is None else finite & visible.to(torch.bool)
    safe = torch.where(keep.unsqueeze(-1), points, torch.zeros_like(points))
    xs = torch.arange(width, device=points.device, dtype=dtype)
    ys = torch.arange(height, device=points.device, dtype=dtype)
    dx2 = (xs - safe[..., 0:1]) ** 2  # [..., J, W]
    dy2 = (ys - safe[..., 1:2]) ** 2  # [..., J, H]
    inv = 1.0 / (2.0 * sigma * sigma)
    maps = torch.exp(-dy2 * inv).unsqueeze(-1) * torch.exp(-dx2 * inv).unsqueeze(-2)
    return maps * keep.to(dtype)[..., None, None]


def heatmap_argmax(heatmaps: Tensor, refine: bool = True) -> tuple[Tensor, Tensor]:
    """Decode the strongest location of each map: ``[..., H, W] -> (points [..., 2], scores [...])``.

    With ``refine`` the arg-max moves a quarter pixel towards the higher neighbour along x and y
    (the standard heatmap-pose trick that halves the quantisation error).
    """
    if heatmaps.dim() < 2:
        raise ValueError(f"heatmap_argmax: expected [..., H, W], got {tuple(heatmaps.shape)}")
    height, width = heatmaps.shape[-2:]
    flat = heatmaps.reshape(-1, height * width)
    scores, index = flat.max(dim=1)
    ys = torch.div(index, width, rounding_mode="floor")
    xs = index - ys * width
    points = torch.stack((xs, ys), dim=-1).to(
        heatmaps.dtype if heatmaps.is_floating_point() else torch.float32
    )
    if refine:
        rows = torch.arange(flat.shape[0], device=heatmaps.device)
        maps = flat.view(-1, height, width)
        x_left = maps[rows, ys, (xs - 1).clamp(min=0)]
        x_right = maps[rows, ys, (xs + 1).clamp(max=width - 1)]
        y_up = maps[rows, (ys - 1).clamp(min=0), xs]
        y_down = maps[rows, (ys + 1).clamp(max=height - 1), xs]
        inside_x = (xs > 0) & (xs < width - 1)
        inside_y = (ys > 0) & (ys < height - 1)
        shift_x = torch.sign(x_right - x_left) * 0.25 * inside_x
        shift_y = torch.sign(y_down - y_up) * 0.25 * inside_y
        points = points + torch.stack((shift_x, shift_y), dim=-1).to(points.dtype)
    lead = heatmaps.shape[:-2]
    return points.view(*lead, 2), scores.view(lead)


def heatmap_peaks(heatmap: Tensor, k: int, kernel: int = 3) -> tuple[Tensor, Tensor, Tensor]:
    """Top-``k`` local maxima of ``heatmap [C, H, W]`` (max-pool suppression, CenterNet style).

    Returns ``(points [k', 2] (x, y), scores [k'], channels [k'])`` with ``k' = min(k, C*H*W)``,
    sorted by descending score.
    """
    if heatmap.dim() != 3:
        raise ValueError(f"heatmap_peaks: expected [C, H, W], got {tuple(heatmap.shape)}")
    if kernel % 2 != 1:
        raise ValueError(f"heatmap_peaks: kernel must be odd, got {kernel}")
    height, width = heatmap.shape[-2:]
    pooled = F.max_pool2d(heatmap.unsqueeze(0), kernel, stride=1, padding=kernel // 2).squeeze(0)
    peaks = torch.where(pooled == heatmap, heatmap, torch.full_like(heatmap, float("-inf")))
    scores, index = peaks.reshape(-1).topk(min(k, peaks.numel()))
    finite = torch.isfinite(scores)
    scores, index = scores[finite], index[finite]
    plane = height * width
    channel = torch.div(index, plane, rounding_mode="floor")
    rest = index - channel * plane
    ys = torch.div(rest, width, rounding_mode="floor")
    xs = rest - ys * width
    points = torch.stack((xs, ys), dim=-1).to(heatmap.dtype)
    return points, scores, channel
