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
from drivemtl.inference.sources import SourceFrame, VideoWriter, open_source
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
from drivemtl.structures.predictions import FramePrediction
from drivemtl.structures.sample import Sample


@dataclass
class PredictResult:
    """What `run_predict` wrote."""

    frames: int
    predictions: Path
    overlays: list[Path] = field(default_factory=list)
    panels: list[Path] = field(default_factory=list)
    flow_pictures: list[Path] = field(default_factory=list)
    videos: list[Path] = field(default_factory=list)  # one overlay MP4 per video, in order

    @property
    def video(self) -> Path | None:
        """The first (for a video file: the only) overlay MP4, None for still images."""
        return self.videos[0] if self.videos else None


def _write_rgb(path: Path, image: np.ndarray) -> Path:
    write_png(path, np.ascontiguousarray(image))
    return path


def _stem(name: str) -> str:
    """A frame name without its suffix, folders kept (`vid/0001.jpg` -> `vid/0001`)."""
    return Path(name).with_suffix("").as_posix()


class OverlayVideos:
    """One overlay MP4 per video of the source, `<out>/<video>_overlay.mp4`, opened as each
    video's first frame arrives and closed when the next video starts."""

    def __init__(self, out_dir: Path, fps: float) -> None:
        self.out_dir = out_dir
        self.fps = fps
        self.paths: list[Path] = []
        self._name: str | None = None
        self._writer: VideoWriter | None = None

    def write(self, video: str, frame: np.ndarray) -> None:
        """Append one frame of `video` (a new video name starts a new file)."""
        writer = self._writer
        if writer is None or video != self._name:
            self.close()
            writer = VideoWriter(self.out_dir / f"{video}_overlay.mp4", self.fps)
            self._name, self._writer = video, writer
            self.paths.append(writer.path)
        writer.write(frame)

    def close(self) -> None:
        """Finish the current video's file."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None


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


def _add_flow(
    predictor: Predictor, pending: tuple[SourceFrame, Sample, FramePrediction],
    frame: SourceFrame, sample: Sample,
) -> None:  # fmt: skip
    """Give the pending frame its forward flow to `frame` when that is its video's next frame."""
    earlier, earlier_sample, prediction = pending
    if predictor.predicts_flow and earlier.video is not None and earlier.video == frame.video:
        prediction.flow = predictor.flow(earlier_sample, sample)


@dataclass
class _FrameOutputs:
    """Everything `run_predict` writes per frame: predictions, trails, overlays, panels, flow
    pictures and the videos' MP4s."""

    out_dir: Path
    writer: PredictionWriter
    trails: TrackTrails
    videos: OverlayVideos
    result: PredictResult
    panels: bool
    display_score: float
    display_width: int

    def write(self, frame: SourceFrame, prediction: FramePrediction) -> None:
        """Write one predicted frame (frames must come in source order)."""
        self.writer.add(prediction)
        self.trails.update(prediction)
        width = self.display_width
        scale = display_scale(frame.image.shape[1], width) if width else 1
        overlay = draw_overlay(
            frame.image, prediction, self.display_score, scale, self.trails.trails or None
        )
        legend = with_legend(overlay, legend_entries(prediction, self.display_score))
        stem, out, result = _stem(frame.name), self.out_dir, self.result
        if prediction.flow is not None:
            path = out / "flow_vis" / f"{stem}.png"
            result.flow_pictures.append(_write_rgb(path, flow_to_color(prediction.flow)))
        result.overlays.append(_write_rgb(out / "overlays" / f"{stem}.png", legend))
        if self.panels:
            for task, picture in draw_panels(frame.image, prediction, scale).items():
                result.panels.append(_write_rgb(out / "panels" / task / f"{stem}.png", picture))
        if frame.video is not None:
            self.videos.write(frame.video, overlay)
        result.frames += 1


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

    A video file, a folder of frames (one video) and a folder of video sub-folders (a BDD100K
    tracking folder: several videos, one after the other) are videos (`sources.py`): each gets
    its own tracker state (the inference state is kept per video name), its own trails (reset
    when the next video starts) and its overlay MP4 `<video>_overlay.mp4` (a frame folder at
    5 fps). Video frames are tracked (`mot` /
    `mots`): ids keep their colours and the overlays draw each track's trail (its last 10
    box-bottom centres; still images have none); the writer adds `box_track.json` (and
    `mots.json`), frames grouped by video. A model with a flow task predicts each video frame's
    forward flow to the video's next frame (the pair runs on its own; a video's last frame and
    still images have none); the writer puts it in KITTI PNGs `flow/<stem>.png`, and a
    colour-wheel picture goes to `flow_vis/<stem>.png`."""
    check_output_dir(out_dir)
    refuse_overwrite(Path(out_dir) / "predictions.json", overwrite)
    frames = open_source(source)
    predictor = make_predictor(config, checkpoint, onnx, device, tasks)
    writer = PredictionWriter(out_dir)
    trails = TrackTrails()
    result = PredictResult(frames=0, predictions=out_dir / "predictions.json")
    videos = OverlayVideos(out_dir, frames.fps)
    bar = Progress(
        TextColumn("predict"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        disable=not progress,
    )  # fmt: skip
    outputs = _FrameOutputs(out_dir, writer, trails, videos, result, panels, display_score,
                            display_width)  # fmt: skip
    with bar:
        job = bar.add_task("frames", total=len(frames) or None)
        try:
            pending: tuple[SourceFrame, Sample, FramePrediction] | None = None
            for frame in frames:
                sample = predictor.sample(frame.image, frame.name, frame.index, frame.video)
                prediction = predictor.predict([sample])[0]
                if pending is not None:
                    _add_flow(predictor, pending, frame, sample)
                    outputs.write(pending[0], pending[2])
                    bar.advance(job)
                pending = (frame, sample, prediction)
            if pending is not None:
                outputs.write(pending[0], pending[2])
                bar.advance(job)
        finally:
            videos.close()
            result.videos = videos.paths
    writer.close()
    return result
