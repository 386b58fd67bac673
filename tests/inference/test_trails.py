"""Track trails: `TrackTrails` memory, trails drawn on overlays, and `run_predict` on a clip."""

import numpy as np
import torch

from drivemtl.data.png_codecs import decode_flow, read_png_unchanged
from drivemtl.inference import run as run_module
from drivemtl.inference.run import run_predict
from drivemtl.inference.sources import VideoWriter
from drivemtl.inference.trails import TrackTrails
from drivemtl.inference.visualize import draw_overlay, flow_to_color
from drivemtl.structures import FramePrediction, Instances, SampleMeta
from drivemtl.structures.palette import instance_colour
from drivemtl.structures.scalabel import load_frames


def tracked(boxes, ids, video="v", index=0, name="f"):
    meta = SampleMeta(name=name, image_set="s", orig_size=(40, 60), video=video, frame_index=index)
    detections = Instances(
        boxes=torch.tensor(boxes, dtype=torch.float32).view(-1, 4),
        classes=torch.zeros(len(ids), dtype=torch.int64),
        scores=torch.full((len(ids),), 0.9),
        track_ids=torch.tensor(ids, dtype=torch.int64),
    )
    return FramePrediction(meta=meta, detections=detections)


def test_trails_keep_the_last_ten_bottom_centres_per_id_and_reset_per_video():
    trails = TrackTrails()
    for k in range(12):
        trails.update(tracked([[k, 0, k + 2, 5 + k], [0, 0, 4, 4]], [3, -1], index=k))
    assert set(trails.trails) == {3}  # untracked boxes (id -1) leave no trail
    assert trails.trails[3] == [(k + 1.0, 5.0 + k) for k in range(2, 12)]
    trails.update(tracked([[10, 10, 20, 30]], [7], video="w"))
    assert trails.trails == {7: [(15.0, 30.0)]}
    trails.update(tracked([[10, 10, 20, 30]], [7], video=None))
    assert trails.trails == {}  # a still image has no trail


def test_trails_are_polylines_in_the_track_colour_scaled_with_the_display():
    image = np.zeros((40, 60, 3), dtype=np.uint8)
    empty = FramePrediction(meta=SampleMeta(name="f", image_set="s", orig_size=(40, 60)))
    out = draw_overlay(image, empty, scale=2, trails={5: [(5.0, 10.0), (25.0, 10.0)]})
    assert out.shape == (80, 120, 3)
    colour = instance_colour(5)
    for x in range(10, 51):  # the segment (10, 20) -> (50, 20) on the 2x canvas
        assert tuple(out[20, x]) == colour
    assert not out[40:].any() and not out[:, 60:].any()  # nothing else drawn
    assert np.array_equal(draw_overlay(image, empty, scale=2), np.zeros((80, 120, 3)))


class StubPredictor:
    """A box moving down-right with track id 4, and a constant +x flow to the next frame."""

    predicts_flow = True

    def sample(self, image, name, index=0, video=None):
        return image, name, index, video

    def predict(self, samples):
        return [self(*sample) for sample in samples]

    def flow(self, key, following):
        flow = torch.zeros(2, *key[0].shape[:2])
        flow[0] = 1.5
        return flow

    def __call__(self, image, name, index=0, video=None):
        return tracked([[10 + 8 * index, 5 + 8 * index, 20 + 8 * index, 15 + 8 * index]], [4],
                       video=video, index=index, name=name)  # fmt: skip


def test_run_predict_on_a_clip_writes_trails_box_tracks_and_flow(tmp_path, monkeypatch):
    monkeypatch.setattr(run_module, "make_predictor", lambda *args, **kwargs: StubPredictor())
    video = tmp_path / "clip.mp4"
    writer = VideoWriter(video, fps=5)
    for _ in range(3):
        writer.write(np.zeros((48, 64, 3), dtype=np.uint8))
    writer.close()
    out = tmp_path / "out"
    result = run_predict(None, None, video, out, progress=False, display_width=0)
    assert result.frames == 3
    last = read_png_unchanged(result.overlays[-1])
    # bottom centres (15, 15), (23, 23), (31, 31): the first segment is off the last box
    assert tuple(last[19, 19]) == instance_colour(4)
    tracks = load_frames(out / "box_track.json")
    assert [f.frameIndex for f in tracks] == [0, 1, 2] and tracks[0].videoName == "clip"
    assert [label.id for f in tracks for label in f.labels] == ["4", "4", "4"]
    assert sorted(p.name for p in (out / "flow").iterdir()) == [
        "clip-0000001.png",
        "clip-0000002.png",
    ]
    flow, valid = decode_flow(read_png_unchanged(out / "flow" / "clip-0000001.png"))
    assert valid.all() and np.allclose(flow[0], 1.5) and np.allclose(flow[1], 0.0)
    picture = read_png_unchanged(out / "flow_vis" / "clip-0000001.png")
    assert np.array_equal(picture, flow_to_color(np.stack([np.full((48, 64), 1.5),
                                                            np.zeros((48, 64))])))  # fmt: skip
