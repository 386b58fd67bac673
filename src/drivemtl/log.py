"""Project-wide logging through the standard `logging` module with a rich console handler."""

from __future__ import annotations

import logging as _logging

from rich.console import Console
from rich.logging import RichHandler

LOGGER_NAME = "drivemtl"


def get_logger(name: str | None = None) -> _logging.Logger:
    """Logger under the `drivemtl` namespace (`get_logger(__name__)` in modules)."""
    if not name or name == LOGGER_NAME:
        return _logging.getLogger(LOGGER_NAME)
    if name.startswith(LOGGER_NAME + "."):
        return _logging.getLogger(name)
    return _logging.getLogger(f"{LOGGER_NAME}.{name}")


def setup_logging(verbosity: int = 0, console: Console | None = None) -> None:
    """Install one rich handler on the `drivemtl` logger: -1 quiet, 0 info, 1+ debug."""
    level = (
        _logging.WARNING if verbosity < 0 else _logging.DEBUG if verbosity > 0 else _logging.INFO
    )
    logger = _logging.getLogger(LOGGER_NAME)
    for handler in list(logger.handlers):
        if getattr(handler, "_drivemtl", False):
            logger.removeHandler(handler)
    handler = RichHandler(
        console=console or Console(stderr=True),
        show_time=verbosity > 0,
        show_path=verbosity > 0,
        rich_tracebacks=True,
        markup=False,
    )
    handler._drivemtl = True  # type: ignore[attr-defined]
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False
