"""User-facing errors: exceptions that the CLI prints as one clear line instead of a traceback."""

from __future__ import annotations

from drivemtl.errors import DriveMTLError


class UsageError(DriveMTLError):
    """Bad input from the user (a missing file, a wrong option value); printed as one line."""


# Exception types whose message is written for a person and shown without a traceback.
USER_ERRORS: tuple[type[Exception], ...] = (DriveMTLError, FileNotFoundError)
