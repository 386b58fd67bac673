"""Inference state carried from frame to frame outside the network (e.g. a tracker's memory).

`MultiTaskNet.predict_with_state(batch, state)` returns the predictions and the state to pass
with the next frames. The state keeps one `VideoState` per video: a task's entry in it is what
that task remembers about the video so far. A video's state starts afresh when its frames
restart (a frame index not after the last one seen); a still image always gets a fresh one.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from drivemtl.structures.sample import SampleMeta


@dataclass
class VideoState:
    """What every task remembers about one video; `last_frame` is the last frame index seen."""

    video: str
    last_frame: int | None = None
    tasks: dict[str, Any] = field(default_factory=dict)

    def of(self, task: str) -> dict[str, Any]:
        """The mutable state dict of `task` for this video."""
        return self.tasks.setdefault(task, {})


@dataclass
class InferenceState:
    """Per-video states, the most recent `max_videos` kept (older ones are dropped)."""

    max_videos: int = 64
    videos: OrderedDict[str, VideoState] = field(default_factory=OrderedDict)

    def for_frame(self, meta: SampleMeta) -> VideoState:
        """The state of the frame's video, advanced to this frame (fresh for still images)."""
        if meta.video is None:
            return VideoState(video=meta.name, last_frame=meta.frame_index)
        state = self.videos.get(meta.video)
        restart = (
            state is not None
            and meta.frame_index is not None
            and state.last_frame is not None
            and meta.frame_index <= state.last_frame
        )
        if state is None or restart:
            state = VideoState(video=meta.video)
            self.videos[meta.video] = state
        self.videos.move_to_end(meta.video)
        while len(self.videos) > self.max_videos:
            self.videos.popitem(last=False)
        state.last_frame = meta.frame_index
        return state
