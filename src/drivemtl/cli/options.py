"""Options several commands share."""

from __future__ import annotations

from typing import Annotated, Any

import typer


def set_option(example: str) -> Any:
    """The repeatable `--set a.b=value` config override option, its help showing `example`."""
    return Annotated[
        list[str] | None,
        typer.Option("--set", help=f"Override a config value: --set {example} (repeatable)."),
    ]
