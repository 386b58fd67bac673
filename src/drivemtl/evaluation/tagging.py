"""Frame tagging: accuracy / precision / recall / F1 per attribute (weather, scene...), in percent.

Counts a confusion matrix per attribute. `compute` gives our model-evaluation keys (`acc/<name>`
and their mean `acc`); `compute_official` gives the summary of the official Scalabel tagging
evaluation (`scalabel.eval.tagging.evaluate_tagging`, scalabel 0.3.1): `accuracy/WEATHER`,
`precision/WEATHER`, `recall/WEATHER`, `f1_score/WEATHER`... per attribute and their NaN-skipping
means `accuracy`, `precision`, `recall`, `f1_score`. As there, every value an attribute lists is a
class ("undefined" included), the macro averages run over the classes present in the ground truth
or the predictions (0 where a class has no prediction / ground truth) and are NaN with fewer than
two such classes, and frames without `attributes` in the ground truth are left out.
"""

from __future__ import annotations

import math
from collections import Counter

import numpy as np

from drivemtl.evaluation.base import EVALUATORS, EvaluationInputError, check_same_type
from drivemtl.evaluation.config import LabelConfig
from drivemtl.structures import bdd
from drivemtl.structures.batch import Batch
from drivemtl.structures.predictions import FramePrediction
from drivemtl.structures.scalabel import Frame

ATTRIBUTES: tuple[str, ...] = tuple(bdd.TAG_ATTRIBUTES)
OFFICIAL_METRICS: tuple[str, ...] = ("precision", "recall", "f1_score", "accuracy")


@EVALUATORS.register("tagging")
class TaggingEvaluator:
    """Confusion matrix (ground truth x prediction) per attribute; 255 ground truth is skipped."""

    task = "tagging"

    def __init__(
        self, attributes: dict[str, tuple[str, ...]] | None = None, strict: bool = True
    ) -> None:
        self.attributes = {k: tuple(v) for k, v in (attributes or bdd.TAG_ATTRIBUTES).items()}
        self.strict = strict
        self.reset()

    def reset(self) -> None:
        """Zero the counts."""
        self.confusion = [np.zeros((len(v), len(v)), np.int64) for v in self.attributes.values()]
        self.skipped: Counter[str] = Counter()

    def merge(self, other: TaggingEvaluator) -> None:
        """Add another evaluator's counts."""
        check_same_type(self, other)
        if other.attributes != self.attributes:
            raise ValueError("cannot merge tagging evaluators of different attributes")
        for mine, theirs in zip(self.confusion, other.confusion, strict=True):
            mine += theirs
        self.skipped.update(other.skipped)

    def add(self, gt: np.ndarray, pred: np.ndarray) -> None:
        """Add frames: [N, A] ground-truth and predicted class indices (255 = unknown ground truth)."""
        gt = np.asarray(gt).reshape(-1, len(self.attributes))
        pred = np.asarray(pred).reshape(-1, len(self.attributes))
        for k, matrix in enumerate(self.confusion):
            known = gt[:, k] != bdd.IGNORE_INDEX
            g, p = gt[known, k], pred[known, k]
            if ((g < 0) | (g >= len(matrix)) | (p < 0) | (p >= len(matrix))).any():
                raise ValueError(f"{list(self.attributes)[k]}: class index out of range")
            np.add.at(matrix, (g, p), 1)

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
        """Add Scalabel frames whose `attributes` hold the tags, as the official evaluation does."""
        preds = {f.name: f for f in pred_frames}
        for frame in gt_frames:
            if frame.attributes is None:
                continue
            pred = preds.get(frame.name)
            if pred is None or pred.attributes is None:
                what = "no prediction" if pred is None else "a prediction without attributes"
                self._bad(f"frame {frame.name!r}: {what}", f"ground-truth frame with {what}")
                continue
            gt, predicted = self._indices(frame, False), self._indices(pred, True)
            gt[predicted == bdd.IGNORE_INDEX] = bdd.IGNORE_INDEX
            self.add(gt, predicted)

    def compute(self) -> dict[str, float]:
        """`acc/<attribute>` and their mean `acc`, NaN for attributes never labelled."""
        result = {}
        for name, matrix in zip(self.attributes, self.confusion, strict=True):
            total = matrix.sum()
            result[f"acc/{name}"] = float(np.trace(matrix) / total) * 100 if total else math.nan
        result["acc"] = _nanmean(list(result.values()))
        return result

    def compute_official(self) -> dict[str, float]:
        """The official summary: `<metric>/<ATTRIBUTE>` and the NaN-skipping mean `<metric>`."""
        per_attribute = {
            name: _official_scores(matrix)
            for name, matrix in zip(self.attributes, self.confusion, strict=True)
        }
        result: dict[str, float] = {}
        for metric in OFFICIAL_METRICS:
            values = {name.upper(): scores[metric] for name, scores in per_attribute.items()}
            result.update({f"{metric}/{name}": v for name, v in values.items()})
            result[metric] = _nanmean(list(values.values()))
        return result

    def _indices(self, frame: Frame, is_pred: bool) -> np.ndarray:
        """Class index per attribute of a frame (255 where lenient mode skips a bad value)."""
        attrs = frame.attributes or {}
        out = np.full(len(self.attributes), bdd.IGNORE_INDEX, dtype=np.int64)
        side = "predicted" if is_pred else "ground-truth"
        for k, (name, values) in enumerate(self.attributes.items()):
            value = attrs.get(name)
            if isinstance(value, str) and value in values:
                out[k] = values.index(value)
                continue
            problem = f"missing {side} {name}" if value is None else f"unknown {side} {name}"
            self._bad(f"frame {frame.name!r}: {problem} {value!r}; known: {values}", problem)
        return out

    def _bad(self, message: str, reason: str) -> None:
        """Raise in strict mode, else count `reason` as skipped."""
        if self.strict:
            raise EvaluationInputError(f"{message} (without --strict it is skipped and counted)")
        self.skipped[reason] += 1


def tag_attributes(config: LabelConfig) -> dict[str, tuple[str, ...]]:
    """The tag attributes of a config: its parent categories and their leaves, as officially."""
    grouped = {leaf for leaves in config.super_categories.values() for leaf in leaves}
    if not config.super_categories or not set(config.categories) <= grouped:
        raise EvaluationInputError(
            "tagging config: every category must be a tag attribute with subcategories"
        )
    return {name: tuple(leaves) for name, leaves in config.super_categories.items()}


def _official_scores(matrix: np.ndarray) -> dict[str, float]:
    """Accuracy and macro precision / recall / F1 of one attribute, as `compute_scores` does."""
    tp = np.diag(matrix).astype(np.float64)
    true_sum, pred_sum = matrix.sum(axis=1), matrix.sum(axis=0)
    total = matrix.sum()
    present = (true_sum + pred_sum) > 0
    precision = _divide(tp, pred_sum)
    recall = _divide(tp, true_sum)
    f1 = _divide(2 * precision * recall, precision + recall)
    accuracy = float(tp.sum() / total) * 100 if total else 0.0
    if present.sum() < 2:  # the official report keeps macro averages of >= 2 classes only
        return {
            "precision": math.nan,
            "recall": math.nan,
            "f1_score": math.nan,
            "accuracy": accuracy,
        }
    return {
        "precision": float(np.mean(precision[present])) * 100,
        "recall": float(np.mean(recall[present])) * 100,
        "f1_score": float(np.mean(f1[present])) * 100,
        "accuracy": accuracy,
    }


def _divide(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """`num / den`, 0 where `den` is 0."""
    return np.divide(num, den, out=np.zeros_like(num, dtype=np.float64), where=den != 0)


def _nanmean(values: list[float]) -> float:
    """Mean of the non-NaN values, NaN if there are none."""
    valid = [v for v in values if not math.isnan(v)]
    return float(np.mean(valid)) if valid else math.nan
