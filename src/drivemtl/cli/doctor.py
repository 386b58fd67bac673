"""`drivemtl doctor`: what this machine offers DriveMTL (Python, torch, devices, threads, disk)."""

from __future__ import annotations

import importlib
import os
import platform
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import torch


@dataclass
class Check:
    """One line of the doctor's report."""

    name: str
    value: str
    ok: bool = True


def _module_version(name: str) -> Check:
    try:
        module = importlib.import_module(name)
    except Exception as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return Check(name, f"not importable ({first[:90]})", ok=False)
    return Check(name, str(getattr(module, "__version__", "installed")))


def run_checks(path: Path = Path(".")) -> list[Check]:
    """Collect the facts `drivemtl doctor` prints; optional pieces are reported, never required."""
    from drivemtl import __version__

    checks = [
        Check("drivemtl", __version__),
        Check("python", f"{platform.python_version()} ({sys.executable})"),
        Check("platform", platform.platform()),
        Check("torch", f"{torch.__version__} (CUDA build: {torch.version.cuda or 'none'})"),
    ]
    if torch.cuda.is_available():
        names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        checks.append(Check("cuda devices", f"{len(names)}: " + ", ".join(names)))
    else:
        checks.append(Check("cuda devices", "none (CPU only)"))
    tv = _module_version("torchvision")
    tv.ok = True  # optional: DriveMTL's own ops are used when it does not import
    checks.append(tv)
    for name in ("cv2", "lightning", "faster_coco_eval", "trackeval", "safetensors"):
        checks.append(_module_version(name))
    checks.append(
        Check(
            "threads",
            f"torch intra-op {torch.get_num_threads()}, inter-op {torch.get_num_interop_threads()}, "
            f"cpus {os.cpu_count()}",
        )
    )
    usage = shutil.disk_usage(path.resolve())
    free_gib = usage.free / 2**30
    checks.append(Check("free disk", f"{free_gib:.1f} GiB at {path.resolve()}", ok=free_gib > 1.0))
    return checks
