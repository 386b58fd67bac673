"""Task plug-ins (one module per task, registered in `TASKS`) and the head families they use."""

from __future__ import annotations

from drivemtl.tasks import (  # noqa: F401  (importing registers every task)
    depth,
    detection,
    drivable,
    edges,
    flow,
    instance,
    lanes,
    mot,
    mots,
    normals,
    pose,
    semantic,
    tagging,
)
from drivemtl.tasks.base import STREAM_PROVIDERS, TASKS, HeadOptions, Task, TaskGroup
from drivemtl.tasks.families import (  # noqa: F401  (importing registers every head family)
    aspp_skip,
    classification,
    dense,
    maskformer,
    pwc_flow,
    quasi_dense,
    roi,
    sparse_rcnn,
    track_join,
    two_stage,
)
from drivemtl.tasks.families.base import HEAD_FAMILIES, HeadFamily

__all__ = [
    "HEAD_FAMILIES",
    "STREAM_PROVIDERS",
    "TASKS",
    "HeadFamily",
    "HeadOptions",
    "Task",
    "TaskGroup",
]
