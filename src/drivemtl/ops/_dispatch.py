"""Optional dispatch to torchvision's compiled kernels.

torchvision is never imported at module level: on the CPU machines it cannot import (its compiled
ops need CUDA libraries). ``torchvision_ops()`` tries once and caches the answer; set the
environment variable ``DRIVEMTL_NO_TORCHVISION=1`` to force the pure-PyTorch implementations.
"""

from __future__ import annotations

import functools
import os
from types import ModuleType

IMPLS = ("auto", "torch", "torchvision")


@functools.cache
def torchvision_ops() -> ModuleType | None:
    """Return ``torchvision.ops`` when it imports and its kernels load, else None."""
    if os.environ.get("DRIVEMTL_NO_TORCHVISION", "") not in ("", "0"):
        return None
    try:
        import torchvision.ops as tv_ops  # optional: GPU machines only
    except Exception:  # missing CUDA libs, ABI mismatch: "absent"
        return None
    return tv_ops


def use_torchvision(impl: str) -> ModuleType | None:
    """Resolve an ``impl`` argument ("auto" | "torch" | "torchvision") to torchvision.ops or None."""
    if impl not in IMPLS:
        raise ValueError(f"impl must be one of {IMPLS}, got {impl!r}")
    if impl == "torch":
        return None
    ops = torchvision_ops()
    if impl == "torchvision" and ops is None:
        raise RuntimeError(
            "impl='torchvision' requested but torchvision.ops cannot be imported here"
        )
    return ops
