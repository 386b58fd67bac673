"""`drivemtl data ...`: generate the synthetic driving world, look at a dataset, count its labels."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from drivemtl.cli.errors import UsageError

app = typer.Typer(help="Synthetic datasets: generate, show, count.", no_args_is_help=True)
console = Console()


@app.command()
def synth(
    preset: Annotated[
        str,
        typer.Option(
            help="bdd-sets, lv-disjoint-normal, lv-disjoint-balance, lv-full, dense, dense-uda "
            "(clear daytime source, fog / snow / rain at night target), tracking (clips with "
            "track ids, MOTS masks and true flow), demo or all."
        ),
    ] = "bdd-sets",
    out: Annotated[
        Path, typer.Option(help="Output folder (must be empty unless --overwrite).")
    ] = Path("data/synthetic"),
    num_frames: Annotated[
        int, typer.Option("--num-frames", help="Frames in total, split over the preset's sets.")
    ] = 200,
    size: Annotated[str, typer.Option(help="Image size WxH (positive even numbers).")] = "640x360",
    seed: Annotated[int, typer.Option(help="World seed: same seed, same files.")] = 0,
    workers: Annotated[int, typer.Option(help="Processes rendering in parallel.")] = 1,
    overwrite: Annotated[bool, typer.Option(help="Replace a dataset already in --out.")] = False,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> None:
    """Render a synthetic multi-task dataset in the BDD100K / Scalabel layout."""
    from drivemtl.data.synthetic import PRESETS, SynthError, generate_dataset, parse_size

    if preset not in PRESETS:
        raise UsageError(f"unknown preset {preset!r}; known: {', '.join(PRESETS)}")
    try:
        dims = parse_size(size)
        path = generate_dataset(out, preset, num_frames, dims, seed, workers, overwrite, progress)
    except SynthError as exc:
        raise UsageError(str(exc)) from None
    console.print(f"wrote {preset} dataset to {path}")


@app.command()
def show(
    root: Annotated[Path, typer.Argument(help="Dataset folder (with dataset.yaml).")],
    out: Annotated[Path, typer.Option(help="PNG file for the mosaic.")],
    frame: Annotated[
        str | None, typer.Option(help="Frame name (default: the first frame).")
    ] = None,
) -> None:
    """Draw one frame with every label on disk as a mosaic PNG."""
    import cv2

    from drivemtl.data.synthetic.inspection import DatasetError, frame_mosaic

    try:
        mosaic = frame_mosaic(root, frame)
    except DatasetError as exc:
        raise UsageError(str(exc)) from None
    out.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(out), cv2.cvtColor(mosaic, cv2.COLOR_RGB2BGR)):
        raise UsageError(f"cannot write {out}")
    console.print(f"wrote {out}")


@app.command()
def stats(
    root: Annotated[Path, typer.Argument(help="Dataset folder (with dataset.yaml).")],
) -> None:
    """Print frames, label files and label counts per image set."""
    from drivemtl.data.synthetic.inspection import DatasetError, dataset_stats

    try:
        sets = dataset_stats(root)
    except DatasetError as exc:
        raise UsageError(str(exc)) from None
    for s in sets:
        table = Table(
            title=f"{s.name}: {s.frames} frames, {s.videos} videos; tasks {', '.join(s.tasks)}"
        )
        table.add_column("what")
        table.add_column("count", justify="right")
        for folder, count in s.files.items():
            table.add_row(f"files {folder}", str(count))
        for key, count in sorted(s.labels.items()):
            table.add_row(key, str(count))
        console.print(table)
