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
from drivemtl.errors import DriveMTLError
from drivemtl.inference.predictor import Predictor
from drivemtl.inference.sources import VideoWriter, open_source
from drivemtl.inference.trails import TrackTrails
from drivemtl.inference.visualize import (
    DISPLAY_SCORE,
    DISPLAY_WIDTH,
    display_scale,
    draw_overlay,
    draw_panels,
    flow_to_color,
    legend_entries,
    with_legend,
)
from drivemtl.outputs import check_output_dir, refuse_overwrite


@dataclass
class PredictResult:
    """What `run_predict` wrote."""

    frames: int
    predictions: Path
    overlays: list[Path] = field(default_factory=list)
    panels: list[Path] = field(default_factory=list)
    flow_pictures: list[Path] = field(default_factory=list)
    video: Path | None = None


def _write_rgb(path: Path, image: np.ndarray) -> Path:
    write_png(path, np.ascontiguousarray(image))
    return path


def make_predictor(
    config: RunConfig | None,
    checkpoint: Path | None,
    onnx: Path | None,
    device: str = "cpu",
    tasks: Sequence[str] | None = None,
) -> Predictor:
    """The PyTorch predictor (config + checkpoint) or the ONNX one (export folder)."""
    if onnx is not None:
        from drivemtl.inference.onnx_predictor import OnnxPredictor

        return OnnxPredictor(onnx, config, tasks=tasks)
    if config is None or checkpoint is None:
        raise DriveMTLError("predicting with PyTorch needs a config and a checkpoint")
    return Predictor(config, checkpoint, device=device, tasks=tasks)


def run_predict(
    config: RunConfig | None,
    checkpoint: Path | None,
    source: str | Path,
    out_dir: Path,
    panels: bool = False,
    tasks: Sequence[str] | None = None,
    device: str = "cpu",
    progress: bool = True,
    overwrite: bool = False,
    onnx: Path | None = None,
    display_score: float = DISPLAY_SCORE,
    display_width: int = DISPLAY_WIDTH,
) -> PredictResult:
    """Predict every frame of `source` and write overlays, panels, video and predictions.

    The network is the config's model with `checkpoint` (PyTorch), or the ONNX export folder
    `onnx` (onnxruntime; `config`, when given, must be the exported one). `out_dir` is checked
    first (writable; an earlier `predictions.json` there is replaced only with `overwrite`), so
    a bad folder fails before the model runs. Overlays draw detections scoring from
    `display_score` on (the prediction files keep every one), on frames upscaled by a whole
    factor to about `display_width` pixels (0: the frame's own size); the overlay pictures have a
    legend below them, the video's frames do not (its frame size stays fixed).

    Video frames are tracked (`mot` / `mots`): ids keep their colours and the overlays draw
    each track's trail (its last 10 box-bottom centres, reset per video; still
    images have none); the writer adds `box_track.json` (and `mots.json`). Predicted flow is
    written as KITTI PNGs `flow/<stem>.png` and colour-wheel pictures `flow_vis/<stem>.png`."""
    check_output_dir(out_dir)
    refuse_overwrite(Path(out_dir) / "predictions.json", overwrite)
    frames = open_source(source)
    predictor = make_predictor(config, checkpoint, onnx, device, tasks)
    writer = PredictionWriter(out_dir)
    trails = TrackTrails()
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
                trails.update(prediction)
                scale = display_scale(frame.image.shape[1], display_width) if display_width else 1
                overlay = draw_overlay(
                    frame.image, prediction, display_score, scale, trails.trails or None
                )
                legend = with_legend(overlay, legend_entries(prediction, display_score))
                stem = Path(name).stem
                if prediction.flow is not None:
                    path = out_dir / "flow_vis" / f"{stem}.png"
                    result.flow_pictures.append(_write_rgb(path, flow_to_color(prediction.flow)))
                result.overlays.append(_write_rgb(out_dir / "overlays" / f"{stem}.png", legend))
                if panels:
                    for task, picture in draw_panels(frame.image, prediction, scale).items():
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
