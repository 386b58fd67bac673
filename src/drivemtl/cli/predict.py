"""`drivemtl predict`: run a trained model on images, globs, videos or folders of frames."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from drivemtl.cli.options import set_option

SetOption = set_option("data.transforms.test_height=360")


def predict(
    source: Annotated[
        str,
        typer.Option(
            "--source",
            help="Image, glob (still images), video file, or folder of frames: images in it "
            "are one video (name order); else each sub-folder of images is one video (a "
            "BDD100K tracking folder such as images/track/val).",
        ),
    ],
    out: Annotated[Path, typer.Option("--out", help="Output folder.")],
    config: Annotated[
        Path | None,
        typer.Argument(
            help="Run config YAML the model was trained with (optional with --onnx: the "
            "model card's config is used, and a given one must match it)."
        ),
    ] = None,
    checkpoint: Annotated[
        Path | None, typer.Option("--checkpoint", help="Weights (.safetensors).")
    ] = None,
    onnx: Annotated[
        Path | None,
        typer.Option(
            "--onnx", help="Run a `drivemtl export` folder with onnxruntime (CPU) instead."
        ),
    ] = None,
    panels: Annotated[
        bool, typer.Option("--panels", help="Also write one picture per task.")
    ] = False,
    tasks: Annotated[
        list[str] | None, typer.Option("--task", help="Only these tasks (repeatable).")
    ] = None,
    device: Annotated[str, typer.Option(help="cpu, cuda, cuda:1, ...")] = "cpu",
    overrides: SetOption = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
    overwrite: Annotated[
        bool,
        typer.Option("--overwrite", help="Replace the predictions of an earlier run in --out."),
    ] = False,
    display_score: Annotated[
        float,
        typer.Option(
            "--display-score",
            min=0.0,
            max=1.0,
            help="Overlays draw boxes, masks and poses from this score on (files keep all).",
        ),
    ] = 0.5,
    display_width: Annotated[
        int,
        typer.Option(
            "--display-width",
            min=0,
            help="Draw overlays and panels on frames upscaled by a whole factor to about this "
            "width, so labels stay readable on small frames (0: the frame's own size).",
        ),
    ] = 960,
) -> None:
    """Overlays of every predicted task per frame, an MP4 per video, and BDD-format predictions.

    A folder is read as video frames: the images directly in it are one video; a folder of
    sub-folders of images (a BDD100K tracking folder) is one video per sub-folder, each tracked
    on its own. A single image or a glob pattern gives still images (no tracking).
    """
    from drivemtl.cli.errors import UsageError
    from drivemtl.engine.run_config import load_run_config
    from drivemtl.inference.run import run_predict

    if onnx is not None and checkpoint is not None:
        raise UsageError("give either --checkpoint (PyTorch) or --onnx (an export folder)")
    if onnx is None and (config is None or checkpoint is None):
        raise UsageError("predict needs CONFIG and --checkpoint (or --onnx DIR)")
    if onnx is not None and device != "cpu":
        raise UsageError(f"--device {device}: --onnx runs on onnxruntime's CPU provider only")
    if config is None and overrides:
        raise UsageError("--set needs a CONFIG to override")
    cfg = load_run_config(config, overrides or []) if config is not None else None
    result = run_predict(
        cfg,
        checkpoint,
        source,
        out,
        panels,
        tasks,
        device,
        progress,
        overwrite,
        onnx,
        display_score,
        display_width,
    )
    console = Console()
    console.print(f"{result.frames} frames -> overlays in {out / 'overlays'}")
    for video in result.videos:
        console.print(f"video: {video}")
    console.print(f"predictions (BDD100K / Scalabel format): {result.predictions}")
