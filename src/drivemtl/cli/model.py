"""`drivemtl model ...`: inspect a network built from a config (parameters and MACs per part)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from drivemtl.cli.errors import UsageError

app = typer.Typer(help="Inspect the network a config builds.", no_args_is_help=True)


@app.callback()
def _model() -> None:
    """Inspect the network a config builds."""


@app.command("summary")
def summary(
    config: Annotated[Path, typer.Argument(help="YAML config file (with a `model:` section).")],
    overrides: Annotated[
        list[str] | None,
        typer.Option("--set", help="Override a config value: --set model.backbone.width=32."),
    ] = None,
    height: Annotated[int, typer.Option(help="Input height for the MAC count.")] = 720,
    width: Annotated[int, typer.Option(help="Input width for the MAC count.")] = 1280,
) -> None:
    """Print parameters and MACs of the shared extractor and of every head."""
    from drivemtl.engine.run_config import load_run_config
    from drivemtl.models import build_model
    from drivemtl.models.summary import format_summary, summarize

    if height <= 0 or width <= 0:
        raise UsageError(f"--height and --width must be positive, got {height}x{width}")
    cfg = load_run_config(config, overrides or [])
    try:
        model = build_model(cfg.model)
    except (KeyError, ValueError) as exc:
        raise UsageError(f"{config}: cannot build the model: {exc}") from None
    typer.echo(format_summary(summarize(model, (height, width))))
