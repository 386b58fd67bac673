"""Local correlation (cost volume) between two feature maps, as in FlowNetC / PWC-Net."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def cost_volume(f1: Tensor, f2: Tensor, max_displacement: int) -> Tensor:
    """Channel-mean dot products ``<f1(p), f2(p + d)> / C`` for ``|dx|, |dy| <= max_displacement``.

    ``[N, C, H, W] x2 -> [N, D, D, H, W]`` with ``D = 2 * max_displacement + 1``; entry
    ``[:, i, j]`` is displacement ``(dy, dx) = (i - max_displacement, j - max_displacement)``.
    Positions of ``f2`` outside the map count as zeros.
    """
    if f1.shape != f2.shape or f1.dim() != 4:
        raise ValueError(
            f"cost_volume: f1 {tuple(f1.shape)} and f2 {tuple(f2.shape)} must be equal [N, C, H, W]"
        )
    if max_displacement < 0:
        raise ValueError(f"cost_volume: max_displacement must be >= 0, got {max_displacement}")
    height, width = f1.shape[-2:]
    d = max_displacement
    padded = F.pad(f2, (d, d, d, d))
    rows = []
    for dy in range(2 * d + 1):
        cols = []
        for dx in range(2 * d + 1):
            shifted = padded[:, :, dy : dy + height, dx : dx + width]
            cols.append((f1 * shifted).mean(dim=1))
        rows.append(torch.stack(cols, dim=1))
    return torch.stack(rows, dim=1)


def correlation(f1: Tensor, f2: Tensor, max_displacement: int) -> Tensor:
    """``cost_volume`` flattened to ``[N, D*D, H, W]`` (dy major, dx minor) for use as conv input."""
    volume = cost_volume(f1, f2, max_displacement)
    batch, size, _, height, width = volume.shape
    return volume.reshape(batch, size * size, height, width)
