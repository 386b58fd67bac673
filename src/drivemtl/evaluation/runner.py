"""Helpers that `drivemtl eval` wires in: one evaluator per task, fed batch by batch."""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Mapping, Sequence

from drivemtl.evaluation.base import EVALUATORS
from drivemtl.structures.batch import Batch
from drivemtl.structures.predictions import FramePrediction


def build_evaluators(
    tasks: Iterable[str], classes: Mapping[str, Sequence[str]] | None = None
) -> dict[str, object]:
    """A fresh evaluator for each task name that has one registered (others are skipped).

    `classes[task]` is the class list a model predicts for the task (e.g. the 8 thing classes of
    a detector); it is passed to evaluators that take `categories`.
    """
    evaluators = {}
    for task in tasks:
        if task not in EVALUATORS:
            continue
        factory = EVALUATORS.get(task)
        names = (classes or {}).get(task)
        if names is not None and "categories" in inspect.signature(factory).parameters:
            evaluators[task] = factory(categories=list(names))
        else:
            evaluators[task] = factory()
    return evaluators


def evaluate_predictions(
    batches: Iterable[tuple[list[FramePrediction], Batch]], tasks: Iterable[str]
) -> dict[str, dict[str, float]]:
    """Run every task's evaluator over (predictions, batch) pairs; returns {task: metrics}."""
    evaluators = build_evaluators(tasks)
    for predictions, batch in batches:
        for evaluator in evaluators.values():
            evaluator.update(predictions, batch)  # type: ignore[attr-defined]
    return {t: e.compute() for t, e in evaluators.items()}  # type: ignore[attr-defined]
