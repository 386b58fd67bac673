"""Frame tagging: top-1 accuracy per attribute (weather, scene, time of day), in percent."""

from __future__ import annotations

import math

import numpy as np

from drivemtl.evaluation.base import EVALUATORS, check_same_type
from drivemtl.structures import bdd
from drivemtl.structures.batch import Batch
from drivemtl.structures.predictions import FramePrediction
from drivemtl.structures.scalabel import Frame

ATTRIBUTES: tuple[str, ...] = tuple(bdd.TAG_ATTRIBUTES)


@EVALUATORS.register("tagging")
class TaggingEvaluator:
    """Counts correct / labelled frames per attribute; unknown (255) ground truth is skipped."""

    task = "tagging"

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Zero the counts."""
        self.correct = np.zeros(len(ATTRIBUTES), dtype=np.int64)
        self.total = np.zeros(len(ATTRIBUTES), dtype=np.int64)

    def merge(self, other: TaggingEvaluator) -> None:
        """Add another evaluator's counts."""
        check_same_type(self, other)
        self.correct += other.correct
        self.total += other.total

    def add(self, gt: np.ndarray, pred: np.ndarray) -> None:
        """Add frames: [N, 3] ground-truth and predicted indices (255 = unknown ground truth)."""
        gt = np.asarray(gt).reshape(-1, len(ATTRIBUTES))
        pred = np.asarray(pred).reshape(-1, len(ATTRIBUTES))
        known = gt != bdd.IGNORE_INDEX
        self.total += known.sum(axis=0)
        self.correct += (known & (gt == pred)).sum(axis=0)

    def update(self, predictions: list[FramePrediction], batch: Batch) -> None:
        """Add predicted tags of the labelled samples."""
        labeled = batch.is_labeled(self.task)
        for i, pred in enumerate(predictions):
            if not bool(labeled[i]) or batch.tags is None:
                continue
            if pred.tags is None:
                raise ValueError(f"frame {pred.meta.name!r}: no tags prediction")
            self.add(batch.tags[i].cpu().numpy(), pred.tags.cpu().numpy())

    def update_frames(self, gt_frames: list[Frame], pred_frames: list[Frame]) -> None:
        """Add Scalabel frames whose `attributes` hold the tags (missing prediction = wrong)."""
        preds = {f.name: f for f in pred_frames}
        for frame in gt_frames:
            gt = _tag_indices(frame)
            pred = preds.get(frame.name)
            self.add(gt, _tag_indices(pred) if pred is not None else np.full(3, -1))

    def compute(self) -> dict[str, float]:
        """`acc/<attribute>` and their mean `acc`, NaN for attributes never labelled."""
        result = {}
        for k, name in enumerate(ATTRIBUTES):
            result[f"acc/{name}"] = (
                float(self.correct[k] / self.total[k]) * 100 if self.total[k] else math.nan
            )
        valid = [v for v in result.values() if not math.isnan(v)]
        result["acc"] = float(np.mean(valid)) if valid else math.nan
        return result


def _tag_indices(frame: Frame) -> np.ndarray:
    attrs = frame.attributes or {}
    out = np.full(len(ATTRIBUTES), bdd.IGNORE_INDEX, dtype=np.int64)
    for k, name in enumerate(ATTRIBUTES):
        value = attrs.get(name)
        values = bdd.TAG_ATTRIBUTES[name]
        if isinstance(value, str) and value in values and value != "undefined":
            out[k] = values.index(value)
    return out
