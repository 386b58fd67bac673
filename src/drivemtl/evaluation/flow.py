"""Optical flow: VTDNet's proxy (warp frame t+1 instance masks back with the flow, mIoU against
frame t), and end-point error and KITTI's Fl-all (percent of pixels whose end-point error exceeds
both 3 px and 5 % of the true flow's length) where true flow exists."""

from __future__ import annotations

import math

import numpy as np

from drivemtl.evaluation.base import check_same_type


def warp_nearest(values: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """Sample `values` [H, W] (frame t+1) at x + flow (frame t coordinates), nearest neighbour.

    Pixels whose target falls outside the image get -1.
    """
    h, w = values.shape
    ys, xs = np.mgrid[0:h, 0:w]
    tx = np.rint(xs + flow[0]).astype(np.int64)
    ty = np.rint(ys + flow[1]).astype(np.int64)
    inside = (tx >= 0) & (tx < w) & (ty >= 0) & (ty < h)
    out = np.full((h, w), -1, dtype=np.int64)
    out[inside] = values[ty[inside], tx[inside]]
    return out


class FlowEvaluator:
    """Mask-warping mIoU (percent) over instance ids; EPE (pixels) and Fl-all (percent) over
    valid true flow."""

    task = "flow"

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Forget everything."""
        self.ious: list[float] = []
        self.epe_sum = 0.0
        self.epe_count = 0
        self.outliers = 0

    def merge(self, other: FlowEvaluator) -> None:
        """Add another evaluator's frames."""
        check_same_type(self, other)
        self.ious.extend(other.ious)
        self.epe_sum += other.epe_sum
        self.epe_count += other.epe_count
        self.outliers += other.outliers

    def add_masks(self, ids_t: np.ndarray, ids_t1: np.ndarray, flow: np.ndarray) -> None:
        """Add a frame pair: instance-id maps of t and t+1 (0 = background), flow t -> t+1 [2,H,W]."""
        warped = warp_nearest(np.asarray(ids_t1), np.asarray(flow, np.float64))
        ids_t = np.asarray(ids_t)
        for obj in np.intersect1d(np.unique(ids_t), np.unique(ids_t1)):
            if obj == 0:
                continue
            a, b = ids_t == obj, warped == obj
            self.ious.append(float((a & b).sum()) / float((a | b).sum()))

    def add_flow(self, gt: np.ndarray, pred: np.ndarray, valid: np.ndarray | None = None) -> None:
        """Add end-point errors (and Fl-all outliers) of [2, H, W] flows over `valid` pixels."""
        gt = np.asarray(gt, np.float64)
        err = np.linalg.norm(gt - np.asarray(pred, np.float64), axis=0)
        mask = np.ones(err.shape, bool) if valid is None else np.asarray(valid, bool)
        outlier = (err > 3.0) & (err > 0.05 * np.linalg.norm(gt, axis=0))
        self.epe_sum += float(err[mask].sum())
        self.epe_count += int(mask.sum())
        self.outliers += int(outlier[mask].sum())

    def compute(self) -> dict[str, float]:
        """`mIoU` of warped instance masks (objects present in both frames), `EPE`, `Fl-all`."""
        return {
            "mIoU": float(np.mean(self.ious)) * 100 if self.ious else math.nan,
            "EPE": self.epe_sum / self.epe_count if self.epe_count else math.nan,
            "Fl-all": 100.0 * self.outliers / self.epe_count if self.epe_count else math.nan,
        }
