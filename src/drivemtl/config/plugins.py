"""Plug-in modules named by a config (`plugins:`), imported before the rest of it is validated.

A plug-in module registers what the config then names: a task and its data fields, an
evaluator, a head family, a stage kind, a loss weighting... Entries are dotted module names
(importable from `sys.path`) or paths of `.py` files.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from collections.abc import Iterable
from pathlib import Path
from types import ModuleType

from drivemtl.errors import DriveMTLError


class PluginError(DriveMTLError):
    """A plug-in module cannot be imported; the message names the entry and the cause."""


def import_plugin(entry: str) -> ModuleType:
    """Import one plug-in: a `.py` file path or a dotted module name (each imported once)."""
    if entry.endswith(".py"):
        path = Path(entry).expanduser().resolve()
        if not path.is_file():
            raise PluginError(f"plugins: {entry}: file not found")
        digest = hashlib.sha1(str(path).encode()).hexdigest()[:8]
        name = f"drivemtl_plugin_{path.stem}_{digest}"
        if name in sys.modules:
            return sys.modules[name]
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except Exception as exc:
            del sys.modules[name]
            raise PluginError(f"plugins: {entry}: {type(exc).__name__}: {exc}") from exc
        return module
    try:
        return importlib.import_module(entry)
    except Exception as exc:
        raise PluginError(f"plugins: {entry}: {type(exc).__name__}: {exc}") from exc


def import_plugins(entries: Iterable[str]) -> list[ModuleType]:
    """Import every plug-in entry, in order."""
    return [import_plugin(entry) for entry in entries]
