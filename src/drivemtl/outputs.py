"""Output folders checked before any work: writable, not a file, not someone else's files.

`train`, `eval` and `predict` call `check_output_dir` first, so a bad `--out` fails in one line
before a model runs, and `refuse_overwrite` before they replace a file a user may want to keep.
"""

from __future__ import annotations

import os
from pathlib import Path

from drivemtl.errors import DriveMTLError


class OutputError(DriveMTLError):
    """An output path cannot be written, or writing it would replace the user's files."""


def check_output_dir(path: str | Path, what: str = "--out") -> Path:
    """`path` as a folder this process can create and write (raises OutputError naming it)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputError(f"{what} {path}: is a file, not a folder")
    existing = path
    while not existing.exists():
        if existing.parent == existing:
            break
        existing = existing.parent
    if existing.exists() and not existing.is_dir():
        raise OutputError(f"{what} {path}: {existing} is a file, so the folder cannot be created")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise OutputError(f"{what} {path}: {existing} is not writable")
    return path


def refuse_overwrite(path: str | Path, overwrite: bool, what: str = "--out") -> None:
    """OutputError when `path` exists and `overwrite` is not set (the flag is `--overwrite`)."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise OutputError(
            f"{what}: {path} already exists; pass --overwrite to replace it or choose another "
            f"{what}"
        )
