"""Depth metrics: AbsRel, SqRel, RMSE, RMSE-log and delta < 1.25^k (Eigen et al.)."""

from __future__ import annotations

import math

import numpy as np

from drivemtl.evaluation.base import EVALUATORS, check_same_type, dense_pairs
from drivemtl.structures.batch import Batch
from drivemtl.structures.predictions import FramePrediction

_DEPTH_KEYS = ("AbsRel", "SqRel", "RMSE", "RMSE_log", "delta1", "delta2", "delta3")


@EVALUATORS.register("depth")
class DepthEvaluator:
    """Pixel-pooled depth errors over valid ground truth (> 0 and <= max_depth), in metres.

    With `median_scaling` each prediction is first scaled by median(gt) / median(pred) of its
    frame (the monocular protocol). delta_k is reported in percent.
    """

    task = "depth"

    def __init__(
        self, min_depth: float = 1e-3, max_depth: float = 80.0, median_scaling: bool = False
    ) -> None:
        self.min_depth, self.max_depth, self.median_scaling = min_depth, max_depth, median_scaling
        self.reset()

    def reset(self) -> None:
        """Zero the sums."""
        self.sums = np.zeros(7, dtype=np.float64)  # abs_rel, sq_rel, sq, sq_log, d1, d2, d3
        self.count = 0

    def merge(self, other: DepthEvaluator) -> None:
        """Add another evaluator's sums."""
        check_same_type(self, other)
        self.sums += other.sums
        self.count += other.count

    def add(self, gt: np.ndarray, pred: np.ndarray) -> None:
        """Add one frame (same-shape arrays in metres; gt 0 = invalid)."""
        gt = np.asarray(gt, np.float64)
        pred = np.asarray(pred, np.float64)
        valid = (gt > 0) & (gt <= self.max_depth)
        if not valid.any():
            return
        g, p = gt[valid], pred[valid]
        if self.median_scaling:
            p = p * np.median(g) / max(float(np.median(p)), self.min_depth)
        p = np.clip(p, self.min_depth, self.max_depth)
        ratio = np.maximum(g / p, p / g)
        self.sums += [
            np.sum(np.abs(g - p) / g),
            np.sum((g - p) ** 2 / g),
            np.sum((g - p) ** 2),
            np.sum((np.log(g) - np.log(p)) ** 2),
            np.sum(ratio < 1.25),
            np.sum(ratio < 1.25**2),
            np.sum(ratio < 1.25**3),
        ]
        self.count += int(valid.sum())

    def update(self, predictions: list[FramePrediction], batch: Batch) -> None:
        """Add predicted depth maps of the labelled samples."""
        for _, pred, target in dense_pairs(predictions, batch, "depth"):
            self.add(target.numpy(), pred.numpy())

    def compute(self) -> dict[str, float]:
        """AbsRel, SqRel, RMSE, RMSE_log and delta1..3 (percent); NaN without valid pixels."""
        if not self.count:
            return {k: math.nan for k in _DEPTH_KEYS}
        m = [float(v) for v in self.sums / self.count]
        return {
            "AbsRel": m[0], "SqRel": m[1], "RMSE": math.sqrt(m[2]), "RMSE_log": math.sqrt(m[3]),
            "delta1": m[4] * 100, "delta2": m[5] * 100, "delta3": m[6] * 100,
        }  # fmt: skip
