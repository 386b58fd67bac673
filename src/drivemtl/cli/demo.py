"""`drivemtl demo` (what `make demo` runs): the main job end to end on the synthetic world."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from drivemtl.cli.errors import UsageError


def _parse_size(text: str) -> tuple[int, int]:
    width, sep, height = text.lower().partition("x")
    if not sep or not width.isdigit() or not height.isdigit():
        raise UsageError(f"--size must look like WxH (e.g. 320x192), got {text!r}")
    return int(width), int(height)


def demo(
    out: Annotated[Path, typer.Option("--out", help="Output folder (replaced on rerun).")] = Path(
        "runs/demo"
    ),
    size: Annotated[str, typer.Option(help="Frame size WxH of the synthetic world.")] = "320x192",
    train_frames: Annotated[int, typer.Option(help="Training frames to synthesise.")] = 240,
    val_frames: Annotated[int, typer.Option(help="Held-out frames to evaluate on.")] = 40,
    video_frames: Annotated[
        int, typer.Option(help="Training frames of video clips (8 frames a clip).")
    ] = 24,
    video_val_frames: Annotated[int, typer.Option(help="Held-out frames of video clips.")] = 16,
    steps: Annotated[int, typer.Option(help="Optimiser steps over both stages.")] = 600,
    batch_size: Annotated[int, typer.Option(help="Images per batch.")] = 4,
    seed: Annotated[int, typer.Option(help="Seed of the world and of training.")] = 0,
    overlays: Annotated[int, typer.Option(help="Prediction overlays in the report.")] = 4,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
) -> None:
    """Synthesise data, train one multi-task model, evaluate every task, write a report."""
    from drivemtl.inference.demo import DemoOptions, run_demo

    options = DemoOptions(
        out_dir=out, train_frames=train_frames, val_frames=val_frames, video_frames=video_frames,
        video_val_frames=video_val_frames, size=_parse_size(size), steps=steps, batch_size=batch_size, seed=seed, overlays=overlays, progress=progress,
    )  # fmt: skip
    result = run_demo(options)
    console = Console()
    table = Table(title="held-out scores vs trivial baselines")
    for column in ("task", "metric", "model", "baseline", "beats"):
        table.add_column(column)
    for s in result.scores:
        table.add_row(
            s.task, s.metric, f"{s.value:.4g}", f"{s.baseline:.4g}",
            "[green]yes[/]" if s.beats_baseline else "[red]no[/]",
        )  # fmt: skip
    console.print(table)
    console.print(f"total {result.timings.get('total', 0.0):.0f} s")
    console.print(f"report: {result.report_md}  and  {result.report_html}")
