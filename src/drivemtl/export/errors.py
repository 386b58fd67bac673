"""The error of a model that cannot be exported, or of an exported model that does not fit."""

from __future__ import annotations

from drivemtl.errors import DriveMTLError


class ExportError(DriveMTLError):
    """A head / stage that cannot be exported, or an ONNX folder that does not match the config;
    the message names the head, file or key and why."""
