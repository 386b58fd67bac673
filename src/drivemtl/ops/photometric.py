"""Unsupervised optical-flow terms (UFlow / VTDNet): census photometric loss, edge-aware
second-order smoothness, and occlusion estimates (range map, forward-backward consistency).

All functions take [B, C, H, W] tensors; images are RGB in [0, 1], flows are (dx, dy) in pixels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

GREY_WEIGHTS = (0.2989, 0.5870, 0.1140)  # ITU-R 601 luma, as tf.image.rgb_to_grayscale


def census_transform(image: Tensor, radius: int = 3) -> Tensor:
    """Soft census signature [B, (2r+1)^2, H, W] of an RGB image: for each neighbour in the
    (2r+1)^2 patch, d / sqrt(0.81 + d^2) with d = neighbour - centre of the grey image x 255
    (zero padding beyond the borders)."""
    weights = image.new_tensor(GREY_WEIGHTS).view(1, 3, 1, 1)
    grey = (image * weights).sum(1, keepdim=True) * 255.0
    size = 2 * radius + 1
    patches = F.unfold(grey, size, padding=radius).view(
        grey.shape[0], size * size, *grey.shape[-2:]
    )
    diff = patches - grey
    return diff / torch.sqrt(0.81 + diff * diff)


def soft_hamming(census1: Tensor, census2: Tensor) -> Tensor:
    """Soft Hamming distance [B, 1, H, W] of two census signatures: sum d^2 / (0.1 + d^2)."""
    diff2 = (census1 - census2) ** 2
    return (diff2 / (0.1 + diff2)).sum(1, keepdim=True)


def border_mask(like: Tensor, width: int) -> Tensor:
    """[B, 1, H, W] ones with a zero border `width` pixels wide (where a census patch is cut)."""
    mask = like.new_zeros((like.shape[0], 1, *like.shape[-2:]))
    h, w = like.shape[-2:]
    if h > 2 * width and w > 2 * width:
        mask[:, :, width : h - width, width : w - width] = 1.0
    return mask


def census_loss(image1: Tensor, warped2: Tensor, mask: Tensor, radius: int = 3) -> Tensor:
    """Census photometric loss: sum mask (|h| + 0.01)^0.4 / sum mask, h the soft Hamming
    distance of the census signatures of `image1` and the warped second image, `mask` [B, 1, H, W]
    (non-occluded x valid warp), the `radius`-pixel border excluded."""
    hamming = soft_hamming(census_transform(image1, radius), census_transform(warped2, radius))
    weight = mask * border_mask(image1, radius)
    penalty = (hamming.abs() + 0.01) ** 0.4
    return (penalty * weight).sum() / weight.sum().clamp_min(1e-6)


def _grads(x: Tensor, stride: int = 1) -> tuple[Tensor, Tensor]:
    """Forward differences along x [.., H, W - s] and y [.., H - s, W] at `stride`."""
    return x[..., :, stride:] - x[..., :, :-stride], x[..., stride:, :] - x[..., :-stride, :]


def robust_l1(x: Tensor, eps: float = 1e-3) -> Tensor:
    """sqrt(x^2 + eps^2), the differentiable L1 of the smoothness term."""
    return torch.sqrt(x * x + eps * eps)


def smoothness_2nd(flow: Tensor, image: Tensor, edge_constant: float = 150.0) -> Tensor:
    """Edge-aware second-order smoothness of `flow` [B, 2, H, W] given `image` [B, 3, H, W]:
    the mean over x and y of exp(-mean_c |k dI|) robust_l1(second difference of the flow), the
    image gradients taken at stride 2 so they span the same pixels as the second differences."""
    image_gx, image_gy = _grads(image, stride=2)
    weight_x = torch.exp(-(edge_constant * image_gx).abs().mean(1, keepdim=True))
    weight_y = torch.exp(-(edge_constant * image_gy).abs().mean(1, keepdim=True))
    flow_gx, flow_gy = _grads(flow)
    flow_gxx, _ = _grads(flow_gx)
    _, flow_gyy = _grads(flow_gy)
    return ((weight_x * robust_l1(flow_gxx)).mean() + (weight_y * robust_l1(flow_gyy)).mean()) / 2


def range_map(flow: Tensor) -> Tensor:
    """[B, 1, H, W] how much of the frame lands on each pixel when every pixel p moves to
    p + flow(p), by bilinear splatting (targets outside the frame are dropped). Given the backward
    flow (frame 2 -> frame 1), pixels of frame 1 with a range below 1 are (partly) occluded."""
    b, _, h, w = flow.shape
    ys, xs = torch.meshgrid(
        torch.arange(h, dtype=flow.dtype, device=flow.device),
        torch.arange(w, dtype=flow.dtype, device=flow.device),
        indexing="ij",
    )
    x = (xs + flow[:, 0]).reshape(b, -1)
    y = (ys + flow[:, 1]).reshape(b, -1)
    x0, y0 = x.floor(), y.floor()
    out = flow.new_zeros(b, h * w)
    for dx in (0, 1):
        for dy in (0, 1):
            xi, yi = x0 + dx, y0 + dy
            weight = (1 - (x - xi).abs()) * (1 - (y - yi).abs())
            inside = (xi >= 0) & (xi <= w - 1) & (yi >= 0) & (yi <= h - 1)
            index = (yi.clamp(0, h - 1) * w + xi.clamp(0, w - 1)).long()
            out.scatter_add_(1, index, torch.where(inside, weight, 0.0))
    return out.view(b, 1, h, w)


def fb_consistency_mask(
    flow: Tensor, backward_warped: Tensor, alpha1: float = 0.01, alpha2: float = 0.5
) -> Tensor:
    """[B, 1, H, W] 1 where the forward flow and the backward flow warped to frame 1 agree:
    |f + b~|^2 <= alpha1 (|f|^2 + |b~|^2) + alpha2, else 0 (occluded)."""
    mismatch = ((flow + backward_warped) ** 2).sum(1, keepdim=True)
    bound = alpha1 * ((flow**2).sum(1, keepdim=True) + (backward_warped**2).sum(1, keepdim=True))
    return (mismatch <= bound + alpha2).to(flow.dtype)
