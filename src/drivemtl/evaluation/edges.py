"""Semantic-edge metric: pixel F1 of thresholded edge probabilities."""

from __future__ import annotations

import math

import numpy as np

from drivemtl.evaluation.base import EVALUATORS, check_same_type, dense_pairs
from drivemtl.structures.batch import Batch
from drivemtl.structures.predictions import FramePrediction


@EVALUATORS.register("edges")
class EdgesEvaluator:
    """Pixel-wise F1 of edge maps thresholded at `threshold` (255 ground truth ignored), percent."""

    task = "edges"

    def __init__(self, threshold: float = 0.5) -> None:
        self.threshold = threshold
        self.reset()

    def reset(self) -> None:
        """Zero the counts."""
        self.tp = self.fp = self.fn = 0

    def merge(self, other: EdgesEvaluator) -> None:
        """Add another evaluator's counts."""
        check_same_type(self, other)
        self.tp += other.tp
        self.fp += other.fp
        self.fn += other.fn

    def add(self, gt: np.ndarray, prob: np.ndarray) -> None:
        """Add one frame: gt 0 / 1 (255 = ignore), predicted edge probability."""
        gt = np.asarray(gt)
        valid = gt != 255
        pos = np.asarray(prob) >= self.threshold
        g = (gt == 1) & valid
        self.tp += int((pos & g).sum())
        self.fp += int((pos & ~g & valid).sum())
        self.fn += int((~pos & g).sum())

    def update(self, predictions: list[FramePrediction], batch: Batch) -> None:
        """Add predicted edge probabilities of the labelled samples."""
        for _, pred, target in dense_pairs(predictions, batch, "edges"):
            self.add(target.numpy(), pred.numpy())

    def compute(self) -> dict[str, float]:
        """F1, precision, recall in percent (NaN when there are no edges at all)."""
        denom_p, denom_r = self.tp + self.fp, self.tp + self.fn
        precision = self.tp / denom_p if denom_p else math.nan
        recall = self.tp / denom_r if denom_r else math.nan
        if math.isnan(precision) or math.isnan(recall) or precision + recall == 0:
            f1 = 0.0 if denom_r and self.tp == 0 else math.nan
        else:
            f1 = 2 * precision * recall / (precision + recall)
        return {"F1": f1 * 100, "precision": precision * 100, "recall": recall * 100}
