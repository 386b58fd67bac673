"""Confusion-matrix segmentation metrics (mIoU, mAcc, fIoU, pAcc) as the BDD100K toolkit defines them.

The matrix has one extra row / column for "ignored": ground-truth pixels of the ignore value are
left out, predicted values outside the class range count as ignored predictions. The means run
over the classes that occur in the ground truth; a class without ground truth reports 0 in the
per-class output (0 / 0 counted as 0, as the toolkit does) but stays out of the means.
Accuracy is the toolkit's per-class `diag / predicted-count`.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from drivemtl.evaluation.base import EVALUATORS, check_same_type
from drivemtl.structures import bdd
from drivemtl.structures.batch import Batch
from drivemtl.structures.predictions import FramePrediction


def confusion_matrix(
    gt: np.ndarray, pred: np.ndarray, num_classes: int, ignore_index: int = bdd.IGNORE_INDEX
) -> np.ndarray:
    """[(C + 1), (C + 1)] int64 counts, rows ground truth, last row / column "ignored".

    Ground-truth pixels outside 0..C-1 (the ignore value included) are left out; predicted values
    outside 0..C-1 land in the last column. uint8 maps go through lookup tables (fast path).
    """
    size = num_classes + 1
    gt = np.asarray(gt).reshape(-1)
    pred = np.asarray(pred).reshape(-1)
    if gt.shape != pred.shape:
        raise ValueError(f"ground truth has {gt.size} pixels but prediction has {pred.size}")
    if gt.dtype == np.uint8 and pred.dtype == np.uint8 and size < 256:
        # row offsets (dropped ground truth -> one row past the matrix) + column per value
        row = np.full(256, size * size, dtype=np.uint16)
        row[:num_classes] = np.arange(num_classes, dtype=np.uint16) * size
        col = np.full(256, num_classes, dtype=np.uint16)
        col[:num_classes] = np.arange(num_classes, dtype=np.uint16)
        index = np.take(row, gt) + np.take(col, pred)
        counts = np.bincount(index, minlength=size * (size + 1))[: size * size]
        return counts.astype(np.int64).reshape(size, size)
    gt = gt.astype(np.int64)
    pred = pred.astype(np.int64)
    keep = (gt >= 0) & (gt < num_classes)
    pred = np.where((pred < 0) | (pred >= num_classes), num_classes, pred)
    return np.bincount(size * gt[keep] + pred[keep], minlength=size * size).reshape(size, size)


class SegmentationEvaluator:
    """Accumulates a confusion matrix over frames; `compute()` returns the official summary."""

    task = "semantic"
    target_field = "semantic"

    def __init__(
        self,
        categories: list[str] | tuple[str, ...] = bdd.SEMANTIC_CLASSES,
        exclude_from_mean: tuple[str, ...] = (),
    ) -> None:
        self.categories = list(categories)
        self.exclude_from_mean = exclude_from_mean
        self.reset()

    def reset(self) -> None:
        """Zero the matrix."""
        n = len(self.categories) + 1
        self.hist = np.zeros((n, n), dtype=np.int64)
        self.gt_present = np.zeros(len(self.categories), dtype=bool)

    def merge(self, other: SegmentationEvaluator) -> None:
        """Add another evaluator's matrix."""
        check_same_type(self, other)
        self.hist += other.hist
        self.gt_present |= other.gt_present

    def add(self, gt: np.ndarray, pred: np.ndarray) -> None:
        """Add one frame's ground-truth and predicted class maps (same shape)."""
        if np.shape(gt) != np.shape(pred):
            raise ValueError(f"ground truth is {np.shape(gt)} but prediction is {np.shape(pred)}")
        hist = confusion_matrix(gt, pred, len(self.categories))
        self.hist += hist
        self.gt_present |= hist[:-1].sum(axis=1) > 0

    def update(self, predictions: list[FramePrediction], batch: Batch) -> None:
        """Add model class maps against the batch targets (labelled samples only)."""
        target = getattr(batch, self.target_field)
        labeled = batch.is_labeled(self.task)
        for i, pred in enumerate(predictions):
            if not bool(labeled[i]) or target is None:
                continue
            h, w = batch.image_sizes[i]
            value = getattr(pred, self.target_field)
            if value is None:
                raise ValueError(f"frame {pred.meta.name!r}: no {self.target_field} prediction")
            pred_map = resize_nearest(value, (h, w))
            self.add(target[i, :h, :w].cpu().numpy(), pred_map.cpu().numpy())

    def compute(self) -> dict[str, float]:
        """mIoU, mAcc, fIoU, pAcc and per-class `IoU/<name>` / `Acc/<name>` in percent."""
        hist = self.hist.astype(np.float64)
        diag = np.diag(hist)
        with np.errstate(divide="ignore", invalid="ignore"):
            iou = diag / (hist.sum(1) + hist.sum(0) - diag)
            acc = diag / hist.sum(0)
        iou = np.nan_to_num(iou, nan=0.0)[:-1]
        acc = np.nan_to_num(acc, nan=0.0)[:-1]
        counted = self.gt_present.copy()
        for name in self.exclude_from_mean:
            counted[self.categories.index(name)] = False
        rows = hist[:-1]
        total = rows.sum()
        result = {
            "mIoU": float(iou[counted].mean()) * 100 if counted.any() else math.nan,
            "mAcc": float(acc[counted].mean()) * 100 if counted.any() else math.nan,
            "fIoU": float((iou * rows.sum(axis=1) / total).sum()) * 100 if total else math.nan,
            "pAcc": float(np.diag(rows).sum() / total) * 100 if total else math.nan,
        }
        for k, name in enumerate(self.categories):
            result[f"IoU/{name}"] = float(iou[k]) * 100
            result[f"Acc/{name}"] = float(acc[k]) * 100
        return result


def resize_nearest(value: Tensor, size: tuple[int, int]) -> Tensor:
    """Nearest-neighbour resize of a [H, W] or [C, H, W] map to `size` (no-op when equal)."""
    if tuple(value.shape[-2:]) == tuple(size):
        return value
    squeeze = value.ndim == 2
    x = value[None, None] if squeeze else value[None]
    out = torch.nn.functional.interpolate(x.float(), size=size, mode="nearest")[0]
    out = out[0] if squeeze else out
    return out.to(value.dtype)


@EVALUATORS.register("semantic")
class SemanticEvaluator(SegmentationEvaluator):
    """19-class semantic segmentation."""

    task = "semantic"
    target_field = "semantic"


@EVALUATORS.register("drivable")
class DrivableEvaluator(SegmentationEvaluator):
    """Drivable area (direct, alternative, background); `VTD_mIoU` leaves background out."""

    task = "drivable"
    target_field = "drivable"

    def __init__(self) -> None:
        super().__init__(bdd.DRIVABLE_CLASSES)

    def compute(self) -> dict[str, float]:
        """Official numbers over all three classes plus VTDNet's `VTD_mIoU` without background."""
        result = super().compute()
        valid = [result[f"IoU/{n}"] for k, n in enumerate(bdd.DRIVABLE_CLASSES)
                 if n != "background" and self.gt_present[k]]  # fmt: skip
        result["VTD_mIoU"] = float(np.mean(valid)) if valid else math.nan
        return result
