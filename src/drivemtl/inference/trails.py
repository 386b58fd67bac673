"""Short trails of tracked objects for video overlays: the last few box-bottom-centre points."""

from __future__ import annotations

from collections import deque

import numpy as np
from torch import Tensor

from drivemtl.data.writers import tracked_boxes
from drivemtl.structures.predictions import FramePrediction

TRAIL_LENGTH = 10  # points kept per track id


def _np(value: Tensor) -> np.ndarray:
    return value.detach().cpu().numpy()


class TrackTrails:
    """Per video, the last `length` box-bottom-centre points (original pixels) of each track id.

    `update` with a frame of another video than the last one forgets every trail first; a track
    id that stops appearing keeps its trail until the video ends.
    """

    def __init__(self, length: int = TRAIL_LENGTH) -> None:
        self.length = length
        self.video: str | None = None
        self._points: dict[int, deque[tuple[float, float]]] = {}

    def reset(self) -> None:
        """Forget every trail."""
        self._points = {}

    def add(self, video: str | None, points: dict[int, tuple[float, float]]) -> None:
        """Append one frame's points (track id -> (x, y)) of `video`; a still image (`video`
        None) has no trail, so it only forgets the last video's."""
        if video != self.video or video is None:
            self.reset()
            self.video = video
        if video is None:
            return
        for ident, point in points.items():
            self._points.setdefault(ident, deque(maxlen=self.length)).append(point)

    def update(self, prediction: FramePrediction) -> None:
        """Append the bottom centres of the prediction's tracked boxes (track id >= 0)."""
        points: dict[int, tuple[float, float]] = {}
        boxes = tracked_boxes(prediction)
        if boxes is not None and len(boxes):
            ids = _np(boxes.track_ids).astype(np.int64)
            for (x1, _, x2, y2), ident in zip(_np(boxes.boxes), ids, strict=True):
                if ident >= 0:
                    points[int(ident)] = (float(x1 + x2) / 2.0, float(y2))
        self.add(prediction.meta.video, points)

    @property
    def trails(self) -> dict[int, list[tuple[float, float]]]:
        """Track id -> its points, oldest first."""
        return {ident: list(points) for ident, points in self._points.items()}
