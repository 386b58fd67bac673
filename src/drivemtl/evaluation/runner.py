"""Helpers that `drivemtl eval` wires in: one evaluator per task, fed batch by batch."""

from __future__ import annotations

from collections.abc import Iterable

from drivemtl.evaluation.base import EVALUATORS
from drivemtl.structures.batch import Batch
from drivemtl.structures.predictions import FramePrediction


def build_evaluators(tasks: Iterable[str]) -> dict[str, object]:
    """A fresh evaluator for each task name that has one registered (others are skipped)."""
    return {t: EVALUATORS.get(t)() for t in tasks if t in EVALUATORS}  # type: ignore[operator]


def evaluate_predictions(
    batches: Iterable[tuple[list[FramePrediction], Batch]], tasks: Iterable[str]
) -> dict[str, dict[str, float]]:
    """Run every task's evaluator over (predictions, batch) pairs; returns {task: metrics}."""
    evaluators = build_evaluators(tasks)
    for predictions, batch in batches:
        for evaluator in evaluators.values():
            evaluator.update(predictions, batch)  # type: ignore[attr-defined]
    return {t: e.compute() for t, e in evaluators.items()}  # type: ignore[attr-defined]
