"""The one error type of the data layer: a bad input file, naming the file, the frame and the problem."""

from __future__ import annotations

from pathlib import Path

from drivemtl.errors import DriveMTLError


class DataError(DriveMTLError):
    """Bad input data. The message always reads `<file>: frame <name>: <problem>`."""

    def __init__(self, path: str | Path | None, frame: str | None, problem: str) -> None:
        self.path = None if path is None else Path(path)
        self.frame = frame
        self.problem = problem
        parts = []
        if path is not None:
            parts.append(str(path))
        if frame is not None:
            parts.append(f"frame {frame!r}")
        parts.append(problem)
        super().__init__(": ".join(parts))
