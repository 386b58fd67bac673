"""The `Evaluator` protocol shared by every metric, the task-name registry, and input errors."""

from __future__ import annotations

import math
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor

from drivemtl.registry import Registry
from drivemtl.structures.batch import Batch
from drivemtl.structures.predictions import FramePrediction
from drivemtl.structures.scalabel import ScalabelFormatError


class EvaluationInputError(ScalabelFormatError):
    """Predictions or ground truth an evaluator cannot use; the message names frame and problem."""


@runtime_checkable
class Evaluator(Protocol):
    """Accumulates per-frame statistics, merges across processes and returns official numbers.

    `compute()` returns floats in the official units (percent for scores) under the official keys
    (`AP`, `mIoU`, `MOTA`, ...); a metric without ground truth is NaN, never silently 0.
    """

    task: str

    def update(self, predictions: list[FramePrediction], batch: Batch) -> None:
        """Add a batch of model predictions against the batch's targets (labelled samples only)."""

    def compute(self) -> dict[str, float]:
        """Metrics over everything added so far."""

    def merge(self, other: Evaluator) -> None:
        """Fold another evaluator's state (e.g. from another DDP rank) into this one."""

    def reset(self) -> None:
        """Forget everything added so far."""


# Task name (the strings of `Sample.tasks`) -> evaluator class; filled by the metric modules.
EVALUATORS: Registry[type] = Registry("evaluator")


def percent(value: float) -> float:
    """A ratio in [0, 1] as a percentage, keeping NaN."""
    return float(value) * 100.0 if not math.isnan(value) else math.nan


def check_same_type(evaluator: object, other: object) -> None:
    """Raise a TypeError when merging evaluators of different kinds."""
    if type(evaluator) is not type(other):
        raise TypeError(f"cannot merge {type(other).__name__} into {type(evaluator).__name__}")


def dense_pairs(
    predictions: list[FramePrediction], batch: Batch, field: str
) -> list[tuple[int, Tensor, Tensor]]:
    """(index, prediction at target size, unpadded target) of the samples labelled for `field`."""
    target = getattr(batch, field)
    labeled = batch.is_labeled(field)
    out = []
    for i, pred in enumerate(predictions):
        if not bool(labeled[i]) or target is None:
            continue
        value = getattr(pred, field)
        if value is None:
            raise ValueError(f"frame {pred.meta.name!r}: no {field} prediction")
        h, w = batch.image_sizes[i]
        value = value.detach().float().cpu()
        if tuple(value.shape[-2:]) != (h, w):
            x = value[None, None] if value.ndim == 2 else value[None]
            x = torch.nn.functional.interpolate(
                x, size=(h, w), mode="bilinear", align_corners=False
            )
            value = x[0, 0] if value.ndim == 2 else x[0]
        out.append((i, value, target[i, ..., :h, :w].detach().cpu()))
    return out
