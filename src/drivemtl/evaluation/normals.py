"""Surface-normal metrics: mean / median angular error and % of pixels within 11.25 / 22.5 / 30 deg."""

from __future__ import annotations

import math

import numpy as np

from drivemtl.evaluation.base import EVALUATORS, check_same_type, dense_pairs
from drivemtl.structures.batch import Batch
from drivemtl.structures.predictions import FramePrediction


@EVALUATORS.register("normals")
class NormalsEvaluator:
    """Angle between predicted and true unit normals over valid (non-zero) pixels, in degrees."""

    task = "normals"

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Forget all angles."""
        self.angles: list[np.ndarray] = []

    def merge(self, other: NormalsEvaluator) -> None:
        """Add another evaluator's angles."""
        check_same_type(self, other)
        self.angles.extend(other.angles)

    def add(self, gt: np.ndarray, pred: np.ndarray) -> None:
        """Add one frame of [3, H, W] normals (all-zero ground truth = invalid)."""
        gt = np.asarray(gt, np.float64).reshape(3, -1)
        pred = np.asarray(pred, np.float64).reshape(3, -1)
        valid = np.linalg.norm(gt, axis=0) > 0
        g, p = gt[:, valid], pred[:, valid]
        p = p / np.maximum(np.linalg.norm(p, axis=0, keepdims=True), 1e-12)
        g = g / np.linalg.norm(g, axis=0, keepdims=True)
        cos = np.clip((g * p).sum(axis=0), -1.0, 1.0)
        self.angles.append(np.degrees(np.arccos(cos)).astype(np.float32))

    def update(self, predictions: list[FramePrediction], batch: Batch) -> None:
        """Add predicted normals of the labelled samples."""
        for _, pred, target in dense_pairs(predictions, batch, "normals"):
            self.add(target.numpy(), pred.numpy())

    def compute(self) -> dict[str, float]:
        """mean / median angle and percent of pixels within 11.25, 22.5, 30 degrees."""
        angles = np.concatenate(self.angles) if self.angles else np.zeros(0)
        if not angles.size:
            return {k: math.nan for k in ("mean", "median", "11.25", "22.5", "30")}
        a = angles.astype(np.float64)
        return {
            "mean": float(a.mean()), "median": float(np.median(a)),
            "11.25": float((a < 11.25).mean()) * 100, "22.5": float((a < 22.5).mean()) * 100,
            "30": float((a < 30).mean()) * 100,
        }  # fmt: skip
