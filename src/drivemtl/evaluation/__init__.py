"""Metric implementations with official-toolkit parity, multi-task scores (VTDA, Delta_T), reports."""

from drivemtl.evaluation import (
    coco,
    depth,
    edges,
    lanes,
    normals,
    seg_track,
    segmentation,
    tagging,
    tracking,
)
from drivemtl.evaluation.base import EVALUATORS, EvaluationInputError, Evaluator
from drivemtl.evaluation.delta import delta_t
from drivemtl.evaluation.files import FileEvalResult, evaluate_files
from drivemtl.evaluation.report import write_report
from drivemtl.evaluation.runner import build_evaluators, evaluate_predictions
from drivemtl.evaluation.vtda import vtda

__all__ = [
    "EVALUATORS",
    "EvaluationInputError",
    "Evaluator",
    "FileEvalResult",
    "build_evaluators",
    "coco",
    "delta_t",
    "depth",
    "edges",
    "evaluate_files",
    "evaluate_predictions",
    "lanes",
    "normals",
    "seg_track",
    "segmentation",
    "tagging",
    "tracking",
    "vtda",
    "write_report",
]
