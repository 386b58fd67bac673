"""Network compositions: backbones, necks, task heads and the shared MultiTaskNet.

`build_model` and `MultiTaskNet` are imported lazily so that importing a sub-package (for example
`drivemtl.models.backbones`) does not pull in every head.
"""

from __future__ import annotations

from typing import Any

__all__ = ["MultiTaskNet", "build_model"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from drivemtl.models import multitask

        return getattr(multitask, name)
    raise AttributeError(f"module 'drivemtl.models' has no attribute {name!r}")
