"""`drivemtl predict`: overlays, optional per-task panels, an MP4 for videos, BDD-format output."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from drivemtl.data.png_codecs import write_png
from drivemtl.data.writers import PredictionWriter
from drivemtl.engine.run_config import RunConfig
from drivemtl.inference.predictor import Predictor
from drivemtl.inference.sources import VideoWriter, open_source
from drivemtl.inference.visualize import draw_overlay, draw_panels
from drivemtl.outputs import check_output_dir, refuse_overwrite


@dataclass
class PredictResult:
    """What `run_predict` wrote."""

    frames: int
    predictions: Path
    overlays: list[Path] = field(default_factory=list)
    panels: list[Path] = field(default_factory=list)
    video: Path | None = None


def _write_rgb(path: Path, image: np.ndarray) -> Path:
    write_png(path, np.ascontiguousarray(image))
    return path


def run_predict(
    config: RunConfig,
    checkpoint: Path,
    source: str | Path,
    out_dir: Path,
    panels: bool = False,
    tasks: Sequence[str] | None = None,
    device: str = "cpu",
    progress: bool = True,
    overwrite: bool = False,
) -> PredictResult:
    """Predict every frame of `source` and write overlays, panels, video and predictions.

    `out_dir` is checked first (writable; an earlier `predictions.json` there is replaced only
    with `overwrite`), so a bad folder fails before the model runs."""
    check_output_dir(out_dir)
    refuse_overwrite(Path(out_dir) / "predictions.json", overwrite)
    frames = open_source(source)
    predictor = Predictor(config, checkpoint, device=device, tasks=tasks)
    writer = PredictionWriter(out_dir)
    result = PredictResult(frames=0, predictions=out_dir / "predictions.json")
    video = None
    if frames.kind == "video":
        video = VideoWriter(out_dir / f"{frames.paths[0].stem}_overlay.mp4", frames.fps)
        result.video = video.path
    bar = Progress(
        TextColumn("predict"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        disable=not progress,
    )  # fmt: skip
    with bar:
        job = bar.add_task("frames", total=len(frames) or None)
        try:
            for frame in frames:
                name = frame.name
                prediction = predictor(frame.image, name, frame.index, frame.video)
                writer.add(prediction)
                overlay = draw_overlay(frame.image, prediction)
                stem = Path(name).stem
                result.overlays.append(_write_rgb(out_dir / "overlays" / f"{stem}.png", overlay))
                if panels:
                    for task, picture in draw_panels(frame.image, prediction).items():
                        path = out_dir / "panels" / task / f"{stem}.png"
                        result.panels.append(_write_rgb(path, picture))
                if video is not None:
                    video.write(overlay)
                result.frames += 1
                bar.advance(job)
        finally:
            if video is not None:
                video.close()
    writer.close()
    return result
