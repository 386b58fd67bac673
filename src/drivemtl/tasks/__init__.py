"""Task plug-ins: one module per task, registered by name in `TASKS`."""

from __future__ import annotations

from drivemtl.tasks import (  # noqa: F401  (importing registers every task)
    depth,
    detection,
    drivable,
    edges,
    instance,
    lanes,
    normals,
    pose,
    semantic,
    tagging,
)
from drivemtl.tasks.base import TASKS, HeadOptions, Task, TaskGroup

__all__ = ["TASKS", "HeadOptions", "Task", "TaskGroup"]
