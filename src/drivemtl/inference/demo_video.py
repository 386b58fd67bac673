"""The demo's video part: the trivial video baselines and the tracked-clip / flow pictures.

Baselines: MOT / MOTS get a tracker that gives every detection (every mask) a new id in every
frame, ids never reused, on the very detections the trained tracker outputs as tracks, so the
two differ only in their identities; flow gets zero flow.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import torch

from drivemtl.data.png_codecs import write_png
from drivemtl.inference.trails import TrackTrails
from drivemtl.inference.visualize import draw_overlay, flow_to_color
from drivemtl.structures.predictions import FramePrediction

VIDEO_TASKS = ("mot", "mots", "flow")


def new_id_per_detection(
    predictions: list[FramePrediction], counter: list[int]
) -> list[FramePrediction]:
    """The same frames with every tracked detection / instance (id >= 0) given a fresh id,
    never reused (`counter[0]` is the next free id); untracked boxes stay untracked, flow is 0."""
    out = []
    for pred in predictions:
        fields: dict[str, Any] = {}
        for name in ("detections", "instances"):
            inst = getattr(pred, name)
            if inst is None or inst.track_ids is None:
                continue
            ids = inst.track_ids.clone()
            tracked = ids >= 0
            count = int(tracked.sum())
            ids[tracked] = torch.arange(counter[0], counter[0] + count)
            counter[0] += count
            fields[name] = dataclasses.replace(inst, track_ids=ids)
        if pred.flow is not None:
            fields["flow"] = torch.zeros_like(pred.flow)
        out.append(dataclasses.replace(pred, **fields))
    return out


def tracked_only(prediction: FramePrediction) -> FramePrediction:
    """The prediction with only its tracks (id >= 0) among detections and instances, for
    drawing a tracked clip (untracked low-score boxes would clutter it)."""
    fields: dict[str, Any] = {}
    for name in ("detections", "instances"):
        inst = getattr(prediction, name)
        if inst is not None and inst.track_ids is not None:
            fields[name] = inst[inst.track_ids >= 0]
    return dataclasses.replace(prediction, **fields)


class ClipRecorder:
    """Overlays of one video's frames with track ids and trails, kept for a GIF and a strip."""

    def __init__(self, scale: int = 2) -> None:
        self.scale = scale
        self.video: str | None = None
        self.frames: list[np.ndarray] = []
        self.trails = TrackTrails()

    def add(self, image: np.ndarray, prediction: FramePrediction) -> None:
        """Draw a frame of the first video seen (frames of later videos are ignored)."""
        video = prediction.meta.video
        if self.video is None:
            self.video = video
        if video != self.video:
            return
        shown = tracked_only(prediction)
        self.trails.update(shown)
        self.frames.append(draw_overlay(image, shown, 0.0, self.scale, self.trails.trails))

    def write_gif(self, path: Path, fps: float = 5.0) -> Path | None:
        """An animated GIF of the frames (Pillow), looping; None without frames."""
        from PIL import Image

        if not self.frames:
            return None
        path.parent.mkdir(parents=True, exist_ok=True)
        images = [Image.fromarray(f).quantize(colors=128) for f in self.frames]
        images[0].save(path, save_all=True, append_images=images[1:], loop=0,
                       duration=round(1000 / fps), optimize=True)  # fmt: skip
        return path

    def write_strip(self, path: Path, count: int = 4) -> Path | None:
        """`count` evenly spaced frames side by side in one PNG; None without frames."""
        if not self.frames:
            return None
        picks = np.linspace(0, len(self.frames) - 1, min(count, len(self.frames)))
        gap = np.full((self.frames[0].shape[0], 4, 3), 255, np.uint8)
        parts: list[np.ndarray] = []
        for k in sorted({int(round(p)) for p in picks}):
            parts += [self.frames[k], gap]
        write_png(path, np.concatenate(parts[:-1], axis=1))
        return path


def flow_picture(image: np.ndarray, predicted: np.ndarray, truth: np.ndarray | None) -> np.ndarray:
    """Frame | predicted flow | true flow (when known) side by side, both flows on the colour
    wheel with one normalisation (the larger of the two maxima), so their colours compare."""
    flows = [predicted] if truth is None else [predicted, truth]
    colour = flow_to_color(np.concatenate(flows, axis=2))
    width = predicted.shape[2]
    panels = [image] + [colour[:, k * width : (k + 1) * width] for k in range(len(flows))]
    gap = np.full((image.shape[0], 4, 3), 255, np.uint8)
    out: list[np.ndarray] = []
    for panel in panels:
        out += [panel, gap]
    return np.concatenate(out[:-1], axis=1)
