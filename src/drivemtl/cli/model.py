"""`drivemtl model ...`: inspect a network built from a config (parameters, MACs and peak
activation memory per part)."""

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
    memory_size: Annotated[
        str,
        typer.Option(
            "--memory-size",
            help="HEIGHTxWIDTH of the peak activation memory column (default: DenseMTL's "
            "1024x512 Cityscapes frames), or 'none' for no memory column.",
        ),
    ] = "512x1024",
    memory_batch: Annotated[
        int, typer.Option("--memory-batch", help="Batch size of the memory column.")
    ] = 1,
    rois: Annotated[
        int | None,
        typer.Option(
            "--rois",
            help="Count the RoI heads (masks, keypoints, track embeddings) on this many "
            "detections per image (grid boxes, classes cycling over the detector's) instead of "
            "what the current weights detect on the blank image (MACs and memory).",
        ),
    ] = None,
    memory_training: Annotated[
        bool,
        typer.Option(
            "--memory-training",
            help="Memory of a training forward (what autograd keeps for backward).",
        ),
    ] = False,
) -> None:
    """Print parameters, MACs and peak activation memory of every stage and head.

    Both are counted on the `meta` device (no compute) when the model allows it, else by a
    real pass (RoI heads need real proposals).
    """
    from drivemtl.cli.bench import parse_size
    from drivemtl.engine.run_config import load_run_config
    from drivemtl.models import build_model
    from drivemtl.models.summary import format_summary, model_memory, summarize

    if height <= 0 or width <= 0:
        raise UsageError(f"--height and --width must be positive, got {height}x{width}")
    if memory_batch < 1:
        raise UsageError(f"--memory-batch {memory_batch}: expected a positive number")
    size = None if memory_size.lower() == "none" else parse_size(memory_size, "--memory-size")
    cfg = load_run_config(config, overrides or [])
    try:
        model = build_model(cfg.model)
    except (KeyError, ValueError) as exc:
        raise UsageError(f"{config}: cannot build the model: {exc}") from None
    if rois is not None and rois < 1:
        raise UsageError(f"--rois {rois}: expected a positive number")
    summary = summarize(model, (height, width), rois_per_image=rois)
    memory = None
    if size is not None:
        memory = model_memory(
            model, size, memory_batch, training=memory_training, rois_per_image=rois
        )
    typer.echo(format_summary(summary, memory))
