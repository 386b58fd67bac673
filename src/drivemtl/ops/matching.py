"""Optimal one-to-one assignment (Hungarian / Jonker-Volgenant) on a cost matrix, via SciPy."""

from __future__ import annotations

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor


def hungarian_match(cost: Tensor, maximize: bool = False) -> tuple[Tensor, Tensor]:
    """Minimum-cost matching of rows to columns of ``cost [N, M]``.

    Returns ``(rows, cols)`` long tensors of length ``min(N, M)`` on ``cost``'s device, rows
    ascending. Used by set-prediction detectors (Sparse R-CNN) and trackers. ``+inf`` marks a
    forbidden pair; NaN is an error.
    """
    if cost.dim() != 2:
        raise ValueError(f"hungarian_match: cost must be [N, M], got {tuple(cost.shape)}")
    device = cost.device
    if cost.numel() == 0:
        empty = torch.empty(0, dtype=torch.long, device=device)
        return empty, empty.clone()
    values = cost.detach().to("cpu", torch.float64).numpy()
    if np.isnan(values).any():
        raise ValueError("hungarian_match: cost matrix contains NaN")
    rows, cols = linear_sum_assignment(values, maximize=maximize)
    return (
        torch.as_tensor(rows, dtype=torch.long, device=device),
        torch.as_tensor(cols, dtype=torch.long, device=device),
    )
