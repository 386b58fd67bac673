"""Inference state: one state per video, restarts, still images, the kept-video limit."""

from __future__ import annotations

from drivemtl.structures.sample import SampleMeta
from drivemtl.structures.state import InferenceState


def meta(video: str | None, frame: int | None, name: str = "f") -> SampleMeta:
    return SampleMeta(name=name, image_set="s", orig_size=(4, 4), video=video, frame_index=frame)


def test_a_video_keeps_its_state_until_its_frames_restart() -> None:
    state = InferenceState()
    first = state.for_frame(meta("a", 0))
    first.of("mot")["tracks"] = 3
    assert state.for_frame(meta("a", 1)) is first and first.last_frame == 1
    assert state.for_frame(meta("b", 0)) is not first  # another video, its own state
    assert state.for_frame(meta("a", 2)).of("mot") == {"tracks": 3}
    again = state.for_frame(meta("a", 0))  # the video starts over
    assert again is not first and again.of("mot") == {}


def test_still_images_always_start_afresh_and_old_videos_are_dropped() -> None:
    state = InferenceState(max_videos=2)
    still = state.for_frame(meta(None, None, "img.jpg"))
    still.of("mot")["x"] = 1
    assert state.for_frame(meta(None, None, "img.jpg")).of("mot") == {}
    for video in ("a", "b", "c"):
        state.for_frame(meta(video, 0))
    assert list(state.videos) == ["b", "c"]
    state.for_frame(meta("b", 1))
    assert list(state.videos) == ["c", "b"]  # the most recent is kept last
