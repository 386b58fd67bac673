"""`drivemtl eval`: score a trained model on the evaluation split (registered by `cli.main`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from drivemtl.cli.errors import UsageError

SetOption = Annotated[
    list[str] | None,
    typer.Option("--set", help="Override a config value: --set data.transforms.test_height=360"),
]


def eval_model(
    config: Annotated[Path, typer.Argument(help="Run config YAML (model and data).")],
    checkpoint: Annotated[Path, typer.Option("--checkpoint", help="Weights (.safetensors).")],
    sets: Annotated[
        list[str] | None, typer.Option("--sets", help="Image sets to evaluate (repeatable).")
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="Folder for metrics.json and metrics.md.")
    ] = None,
    overrides: SetOption = None,
    split: Annotated[str, typer.Option("--split", help="Data split to read.")] = "val",
    batch_size: Annotated[int, typer.Option("--batch-size", help="Images per forward.")] = 4,
    device: Annotated[
        str | None, typer.Option("--device", help="cpu, cuda, cuda:1 (default: cuda if any).")
    ] = None,
    workers: Annotated[int, typer.Option("--workers", help="Data loading processes.")] = 0,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> None:
    """Run the model of CONFIG with CHECKPOINT's weights and print every task's metrics."""
    from drivemtl.engine.run_config import load_run_config
    from drivemtl.evaluation.model_eval import ModelEvalError, evaluate_model, frames_line

    if batch_size < 1:
        raise UsageError(f"--batch-size {batch_size}: expected a positive number")
    cfg = load_run_config(config, overrides or [])
    try:
        result = evaluate_model(
            cfg, checkpoint, sets or None, out, batch_size, progress,
            split=split, device=device, num_workers=workers,
        )  # fmt: skip
    except ModelEvalError as exc:
        raise UsageError(str(exc)) from None
    typer.echo(frames_line(result.frames, result.skipped))
    typer.echo(result.table)
    if result.resources_text:
        typer.echo(result.resources_text)
    if result.json_path is not None:
        typer.echo(f"metrics: {result.json_path}")
