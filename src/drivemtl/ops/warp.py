"""Backward warping of feature maps or images by an optical-flow field."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def flow_sample_grid(flow: Tensor) -> Tensor:
    """Normalised ``grid_sample`` grid ``[N, H, W, 2]`` for sampling at ``p + flow(p)``."""
    if flow.dim() != 4 or flow.shape[1] != 2:
        raise ValueError(f"flow must be [N, 2, H, W] (dx, dy), got {tuple(flow.shape)}")
    _, _, height, width = flow.shape
    ys, xs = torch.meshgrid(
        torch.arange(height, device=flow.device, dtype=flow.dtype),
        torch.arange(width, device=flow.device, dtype=flow.dtype),
        indexing="ij",
    )
    x = xs + flow[:, 0]
    y = ys + flow[:, 1]
    # align_corners=True: pixel centre 0 -> -1, pixel centre (size - 1) -> +1.
    x = 2.0 * x / max(width - 1, 1) - 1.0
    y = 2.0 * y / max(height - 1, 1) - 1.0
    return torch.stack((x, y), dim=-1)


def warp_by_flow(x: Tensor, flow: Tensor, padding_mode: str = "zeros") -> Tensor:
    """Sample ``x [N, C, H, W]`` at ``p + flow(p)`` (bilinear): ``out(p) = x(p + flow(p))``.

    ``flow [N, 2, H, W]`` holds (dx, dy) in pixels, so warping frame t+1 with the flow t -> t+1
    reconstructs frame t. Out-of-image samples follow ``padding_mode`` ("zeros" or "border").
    Differentiable in both ``x`` and ``flow``.
    """
    if x.dim() != 4:
        raise ValueError(f"warp_by_flow: x must be [N, C, H, W], got {tuple(x.shape)}")
    if flow.shape[0] != x.shape[0] or flow.shape[2:] != x.shape[2:]:
        raise ValueError(
            f"warp_by_flow: flow {tuple(flow.shape)} must match x {tuple(x.shape)} in N, H, W"
        )
    grid = flow_sample_grid(flow.to(x.dtype))
    return F.grid_sample(x, grid, mode="bilinear", padding_mode=padding_mode, align_corners=True)
