import numpy as np
import torch

from drivemtl.data.bitmasks import decode_instance_bitmask, decode_lanes, rle_to_mask
from drivemtl.data.png_codecs import decode_depth, decode_flow, encode_flow, read_png_unchanged
from drivemtl.data.writers import PredictionWriter
from drivemtl.structures import FramePrediction, Instances, SampleMeta
from drivemtl.structures.scalabel import load_frames


def test_predictions_round_trip_through_the_bdd_formats(tmp_path):
    meta = SampleMeta(
        name="vid/vid-0000003.jpg", image_set="s", orig_size=(6, 8), video="vid", frame_index=3
    )
    masks = torch.zeros(2, 6, 8, dtype=torch.bool)
    masks[0, 1:3, 1:4] = True
    masks[1, 2:5, 3:7] = True  # overlaps mask 0 and scores higher: painted on top
    lanes = torch.zeros(3, 6, 8, dtype=torch.int64)
    lanes[:, 5, :] = torch.tensor([5, 2, 1]).view(3, 1)  # road curb, vertical, solid
    keypoints = torch.rand(1, 18, 3) * 5
    pred = FramePrediction(
        meta=meta,
        tags=torch.tensor([2, 6, 0]),
        semantic=torch.arange(48).view(6, 8) % 19,
        drivable=torch.full((6, 8), 2),
        lanes=lanes,
        detections=Instances(
            boxes=torch.tensor([[1.0, 2.0, 3.5, 4.0]]),
            classes=torch.tensor([2]),
            scores=torch.tensor([0.75]),
            track_ids=torch.tensor([41]),
        ),
        instances=Instances(
            boxes=torch.tensor([[1.0, 1, 4, 3], [3, 2, 7, 5]]),
            classes=torch.tensor([0, 2]),
            scores=torch.tensor([0.4, 0.9]),
            masks=masks,
        ),
        poses=Instances(
            boxes=torch.tensor([[0.0, 0, 5, 5]]),
            classes=torch.tensor([0]),
            scores=torch.tensor([0.6]),
            keypoints=keypoints,
        ),
        depth=torch.full((6, 8), 12.5),
    )
    writer = PredictionWriter(tmp_path)
    writer.add(pred)
    frames = load_frames(writer.close())
    frame = frames[0]
    assert (frame.name, frame.videoName, frame.frameIndex) == ("vid/vid-0000003.jpg", "vid", 3)
    assert frame.attributes == {"weather": "clear", "scene": "highway", "timeofday": "daytime"}
    det, ins0, ins1, pose = frame.labels
    assert (det.id, det.category, det.score) == ("41", "car", 0.75)
    assert (det.box2d.x1, det.box2d.y1, det.box2d.x2, det.box2d.y2) == (1.0, 2.0, 3.5, 4.0)
    assert np.array_equal(rle_to_mask(ins0.rle), masks[0].numpy())
    assert np.array_equal(rle_to_mask(ins1.rle), masks[1].numpy())
    assert [n.category for n in pose.graph.nodes][:2] == ["head", "neck"]
    assert np.allclose(
        [n.location for n in pose.graph.nodes], keypoints[0, :, :2].numpy(), atol=1e-5
    )
    ids = {n.id for n in pose.graph.nodes}  # the official schema needs edges between them
    assert len(pose.graph.edges) == 17 and all(
        e.source in ids and e.target in ids and e.type == "body" for e in pose.graph.edges
    )

    sem = read_png_unchanged(tmp_path / "masks/sem_seg/vid/vid-0000003.png")
    assert np.array_equal(sem, (np.arange(48).reshape(6, 8) % 19).astype(np.uint8))
    lane = decode_lanes(read_png_unchanged(tmp_path / "masks/lane/vid/vid-0000003.png"))
    assert np.array_equal(lane, lanes.numpy())
    inst = decode_instance_bitmask(
        read_png_unchanged(tmp_path / "masks/ins_seg/vid/vid-0000003.png")
    )
    assert inst.ids.tolist() == [1, 2] and inst.categories.tolist() == [0, 2]
    assert np.array_equal(inst.masks[1], masks[1].numpy())
    assert np.array_equal(inst.masks[0], (masks[0] & ~masks[1]).numpy())
    assert np.allclose(
        decode_depth(read_png_unchanged(tmp_path / "depth/vid/vid-0000003.png")), 12.5
    )


def test_untracked_boxes_never_take_a_track_id(tmp_path) -> None:
    meta = SampleMeta(name="vid/vid-0000001.jpg", image_set="s", orig_size=(6, 8), video="vid",
                      frame_index=1)  # fmt: skip
    boxes = torch.tensor([[1.0, 1.0, 3.0, 3.0]]).repeat(3, 1)
    pred = FramePrediction(meta=meta, detections=Instances(
        boxes=boxes, classes=torch.tensor([2, 2, 2]), scores=torch.tensor([0.9, 0.8, 0.7]),
        track_ids=torch.tensor([1, -1, -2]),
    ))  # fmt: skip
    writer = PredictionWriter(tmp_path)
    writer.add(pred)
    (frame,) = load_frames(writer.close())
    assert [label.id for label in frame.labels] == ["1", "-2", "-3"]


def test_mots_outputs_hold_the_tracked_masks_with_their_track_ids(tmp_path) -> None:
    meta = SampleMeta(name="vid/vid-0000002.jpg", image_set="s", orig_size=(6, 8), video="vid",
                      frame_index=2)  # fmt: skip
    masks = torch.zeros(3, 6, 8, dtype=torch.bool)
    masks[0, 0:3, 0:4] = True
    masks[1, 2:5, 3:7] = True  # overlaps mask 0 and scores higher: it keeps the shared pixels
    masks[2, 4:6, 0:2] = True  # untracked
    pred = FramePrediction(meta=meta, instances=Instances(
        boxes=torch.tensor([[0.0, 0, 4, 3], [3, 2, 7, 5], [0, 4, 2, 6]]),
        classes=torch.tensor([0, 2, 2]), scores=torch.tensor([0.4, 0.9, 0.8]),
        track_ids=torch.tensor([12, 0, -1]), masks=masks,
    ))  # fmt: skip
    writer = PredictionWriter(tmp_path)
    writer.add(pred)
    (frame,) = load_frames(writer.close())
    # predictions.json: the box convention (track id, untracked a negative id).
    assert [label.id for label in frame.labels] == ["12", "0", "-3"]
    (mots,) = load_frames(tmp_path / "mots.json")
    assert (mots.name, mots.videoName, mots.frameIndex) == (meta.name, "vid", 2)
    assert [(label.id, label.category) for label in mots.labels] == [("12", "pedestrian"),
                                                                     ("0", "car")]  # fmt: skip
    first = masks[0] & ~masks[1]
    assert np.array_equal(rle_to_mask(mots.labels[0].rle), first.numpy())
    assert np.array_equal(rle_to_mask(mots.labels[1].rle), masks[1].numpy())
    # The bitmask: instance id = track id + 1, the untracked mask left out.
    bitmask = decode_instance_bitmask(
        read_png_unchanged(tmp_path / "masks/seg_track/vid/vid-0000002.png")
    )
    assert bitmask.ids.tolist() == [1, 13] and bitmask.categories.tolist() == [2, 0]
    assert np.array_equal(bitmask.masks[0], masks[1].numpy())
    assert np.array_equal(bitmask.masks[1], first.numpy())


def frame(index, track_ids=None, flow=None, video="vid"):
    meta = SampleMeta(
        name=f"{video}-{index + 1:07d}.jpg", image_set="s", orig_size=(4, 5), video=video,
        frame_index=index,
    )  # fmt: skip
    detections = Instances(
        boxes=torch.tensor([[0.0, 1.0, 2.0, 3.0], [1.0, 1.5, 4.0, 3.5]]),
        classes=torch.tensor([0, 2]),
        scores=torch.tensor([0.9, 0.4]),
        track_ids=None if track_ids is None else torch.tensor(track_ids),
    )
    return FramePrediction(meta=meta, detections=detections, flow=flow)


def test_box_track_json_holds_only_tracked_boxes_with_track_ids(tmp_path):
    writer = PredictionWriter(tmp_path)
    writer.add(frame(0, [7, -1]))
    writer.add(frame(1, [-1, -1]))
    writer.add(frame(2, [7, 9]))
    writer.close()
    tracks = load_frames(tmp_path / "box_track.json")
    assert [(f.name, f.videoName, f.frameIndex) for f in tracks] == [
        ("vid-0000001.jpg", "vid", 0), ("vid-0000002.jpg", "vid", 1), ("vid-0000003.jpg", "vid", 2),
    ]  # fmt: skip
    assert [[label.id for label in f.labels] for f in tracks] == [["7"], [], ["7", "9"]]
    second = tracks[2].labels[1]
    assert second.category == "car" and abs(second.score - 0.4) < 1e-6
    assert (second.box2d.x1, second.box2d.y1, second.box2d.x2, second.box2d.y2) == (
        1.0, 1.5, 4.0, 3.5,
    )  # fmt: skip
    every = load_frames(tmp_path / "predictions.json")  # unchanged: untracked boxes stay
    assert [len(f.labels) for f in every] == [2, 2, 2]
    assert [label.id for label in every[0].labels] == ["7", "-2"]


def test_no_box_track_json_without_track_ids(tmp_path):
    writer = PredictionWriter(tmp_path)
    writer.add(frame(0))
    writer.close()
    assert (tmp_path / "predictions.json").is_file()
    assert not (tmp_path / "box_track.json").exists()


def test_flow_round_trips_through_kitti_pngs(tmp_path):
    rng = np.random.default_rng(0)
    flow = rng.uniform(-300, 300, size=(2, 4, 5)).astype(np.float32)
    flow[1, 0, 0] = np.nan  # invalid
    png = encode_flow(flow, np.ones((4, 5), dtype=bool))
    assert png.dtype == np.uint16 and png.shape == (4, 5, 3)
    expected = np.rint(flow[0, 1, 2] * 64 + 2**15)
    assert png[1, 2, 0] == expected and png[1, 2, 2] == 1 and png[0, 0, 2] == 0
    decoded, valid = decode_flow(png)
    assert not valid[0, 0] and valid.sum() == 19
    assert np.abs(decoded - np.nan_to_num(flow, nan=0.0))[:, valid].max() <= 0.5 / 64

    writer = PredictionWriter(tmp_path)
    writer.add(frame(0, flow=torch.from_numpy(flow)))
    writer.close()
    written, written_valid = decode_flow(read_png_unchanged(tmp_path / "flow" / "vid-0000001.png"))
    assert np.array_equal(written_valid, valid) and np.array_equal(written, decoded)
