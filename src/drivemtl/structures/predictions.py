"""Typed predictions of one frame, in original-image coordinates (what post-processing returns)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import Tensor

from drivemtl.structures.fields import FieldAccess
from drivemtl.structures.instances import Instances
from drivemtl.structures.sample import LaneLine, SampleMeta


@dataclass
class FramePrediction(FieldAccess):
    """Every task's prediction for one frame; a field is None when that task was not run.

    tags / tag_scores: [3] class index and probability per attribute (weather, scene, timeofday).
    semantic, drivable: [H, W] int64 class maps; semantic_confidence, drivable_confidence: [H, W]
    probability of the chosen class (pseudo labels set pixels below a threshold to ignore);
    lanes: [3, H, W] (category, direction, style with 0 = background). detections: boxes +
    classes + scores (+ masks for instance segmentation, keypoints for pose, track_ids for
    tracking). depth [H, W] metres, normals [3, H, W] unit vectors, edges [H, W] probability,
    flow [2, H, W] pixels. A plug-in task's predictions live in `extras` under its field names
    (read like attributes; `<field>_confidence` beside a class map, for pseudo labels).
    """

    meta: SampleMeta
    tags: Tensor | None = None
    tag_scores: Tensor | None = None
    semantic: Tensor | None = None
    semantic_confidence: Tensor | None = None
    drivable: Tensor | None = None
    drivable_confidence: Tensor | None = None
    lanes: Tensor | None = None
    lane_lines: list[LaneLine] | None = None
    detections: Instances | None = None
    instances: Instances | None = None
    poses: Instances | None = None
    depth: Tensor | None = None
    normals: Tensor | None = None
    edges: Tensor | None = None
    flow: Tensor | None = None
    extras: dict[str, Any] = field(default_factory=dict)
