"""BDD100K reader on the real fixture files: frame / label counts and known decoded pixels."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from drivemtl.data import DataConfig, DataError, build_dataset
from drivemtl.data.bitmasks import rle_to_mask
from drivemtl.structures.bdd import (
    DETECTION_CLASSES_10,
    IGNORE_INDEX,
    POSE_JOINTS,
    SCENE,
    SEMANTIC_CLASSES,
    THING_CLASSES,
    TIMEOFDAY,
    WEATHER,
)
from drivemtl.structures.scalabel import load_frames


def _dataset(root: Path, tasks: list[str], **set_options):
    cfg = DataConfig(
        sets={"s": {"root": str(root), "tasks": tasks, **set_options}},
        transforms={"resize": False, "normalize": False, "flip": 0.0},
    )
    return build_dataset(cfg, "train")


@pytest.fixture(scope="module")
def track_root(tmp_path_factory, images):
    fixtures = Path(__file__).resolve().parents[3] / ".." / "shared" / "fixtures" / "bdd100k"
    if not fixtures.is_dir():
        pytest.skip(f"real-format fixtures not found at {fixtures}")
    place_images = images

    root = tmp_path_factory.mktemp("track")
    frames = json.loads((fixtures / "box_track" / "track_sample_anns.json").read_text())
    place_images(root / "images", [f"{f['videoName']}/{f['name']}" for f in frames])
    return root, fixtures


def test_box_track_frames_labels_and_track_ids(track_root):
    root, fixtures = track_root
    labels = fixtures / "box_track" / "track_sample_anns.json"
    ds = _dataset(root, ["mot"], paths={"labels": str(labels)}, categories="box_track")
    raw = json.loads(labels.read_text())
    assert len(ds) == 202
    total, ids = 0, set()
    for i in range(len(ds)):
        sample = ds[i]
        frame = raw[i]
        assert sample.meta.name == frame["name"] and sample.meta.frame_index == frame["frameIndex"]
        assert sample.size == (720, 1280) and sample.tasks == {"mot"}
        inst = sample.instances
        assert len(inst) == len(frame["labels"])  # every label is one of the 8 classes
        expected = torch.tensor(
            [[lb["box2d"][k] for k in ("x1", "y1", "x2", "y2")] for lb in frame["labels"]],
            dtype=torch.float64,
        )
        assert torch.allclose(inst.boxes.double(), expected, atol=1e-4)
        assert [THING_CLASSES[c] for c in inst.classes.tolist()] == [
            lb["category"] for lb in frame["labels"]
        ]
        assert inst.ignore.tolist() == [lb["attributes"]["crowd"] for lb in frame["labels"]]
        total += len(inst)
        ids.update(zip([lb["id"] for lb in frame["labels"]], inst.track_ids.tolist(), strict=True))
    assert total == 3241
    # track ids: one integer per label id, consistent over the whole video
    assert len({i for i, _ in ids}) == len(ids) == len({t for _, t in ids})


def test_a_tracking_set_without_flow_labels_trains_flow_from_its_frames(track_root):
    """Real BDD100K tracking folders have no flow: `flow` in the set's tasks reads nothing and
    keeps the task (unsupervised flow learns from the frame pairs)."""
    root, fixtures = track_root
    labels = fixtures / "box_track" / "track_sample_anns.json"
    ds = _dataset(root, ["mot", "flow"], paths={"labels": str(labels)}, categories="box_track")
    sample = ds[0]
    assert sample.tasks == {"mot", "flow"} and sample.flow is None


def test_detection_categories_from_official_toml(track_root):
    root, fixtures = track_root
    ds = _dataset(
        root,
        ["detection", "tagging"],
        paths={"labels": str(fixtures / "box_track" / "track_sample_anns.json")},
        categories=str(fixtures / "configs" / "det.toml"),
    )
    sample = ds[5]
    assert sample.tasks == {"detection", "tagging"}
    names = {DETECTION_CLASSES_10[c] for c in sample.instances.classes.tolist()}
    assert names <= {"pedestrian", "rider", "car", "truck", "bus", "motorcycle"}
    assert sample.tags.tolist() == [IGNORE_INDEX] * 3  # this file has no frame attributes


def test_pose_keypoints(bdd_fixtures, tmp_path, images):
    path = bdd_fixtures / "pose" / "pose_sample.json"
    frames = json.loads(path.read_text())
    images(tmp_path / "images", [f["name"] for f in frames])
    ds = _dataset(tmp_path, ["pose"], paths={"labels": str(path)}, categories="pose")
    assert len(ds) == 2
    counts = [len(ds[i].instances) for i in range(2)]
    assert sum(counts) == sum(len(f["labels"]) for f in frames) == 4
    kp = ds[0].instances.keypoints
    assert kp.shape == (counts[0], 18, 3)
    node = frames[0]["labels"][0]["graph"]["nodes"][0]
    assert node["category"] == "head"
    assert kp[0, POSE_JOINTS.index("head")].tolist() == [1058.0, 256.0, 2.0]
    for label_index, label in enumerate(frames[0]["labels"]):
        for node in label["graph"]["nodes"]:
            j = POSE_JOINTS.index(node["category"])
            vis = 2.0 if node["visibility"] == "V" else 1.0
            expected = torch.tensor([*node["location"], vis], dtype=torch.float32)
            assert torch.equal(kp[label_index, j], expected)


def test_semantic_from_rle_paints_in_order_and_ignores_other_names(bdd_fixtures, tmp_path, images):
    path = bdd_fixtures / "sem_seg" / "sem_seg_sample.json"
    frame = load_frames(path)[0]
    images(tmp_path / "images", [frame.name])
    sample = _dataset(tmp_path, ["semantic"], paths={"labels": str(path)})[0]
    # independent reference: paint each label's RLE in order
    expected = np.full((720, 1280), IGNORE_INDEX, dtype=np.int64)
    for label in frame.labels:
        value = (
            SEMANTIC_CLASSES.index(label.category)
            if label.category in SEMANTIC_CLASSES
            else IGNORE_INDEX
        )
        expected[rle_to_mask(label.rle)] = value
    assert np.array_equal(sample.semantic.numpy(), expected)
    assert sample.semantic[5, 1000] == SEMANTIC_CLASSES.index("sky")
    assert (sample.semantic == SEMANTIC_CLASSES.index("car")).sum() > 0


def _bitmask_set(tmp_path: Path, folder: str, source: Path, name: str, place_images) -> Path:

    (tmp_path / folder / Path(name).parent).mkdir(parents=True, exist_ok=True)
    shutil.copy(source, tmp_path / folder / Path(name).with_suffix(".png"))
    place_images(tmp_path / "images", [name])
    return tmp_path


def test_semantic_bitmask_known_pixels(bdd_fixtures, tmp_path, images):
    root = _bitmask_set(
        tmp_path, "masks/semantic", bdd_fixtures / "label" / "semseg_mask.png", "a.jpg", images
    )
    sem = _dataset(root, ["semantic"])[0].semantic
    assert sem.dtype == torch.int64 and sem.shape == (720, 1280)
    assert int((sem == 13).sum()) == 121254 and set(sem.unique().tolist()) == {13, IGNORE_INDEX}
    assert sem[192, 320] == 13 and sem[342, 511] == 13 and sem[0, 0] == IGNORE_INDEX


def test_instance_bitmask_known_instances(bdd_fixtures, tmp_path, images):
    root = _bitmask_set(
        tmp_path, "masks/instance", bdd_fixtures / "label" / "insseg_bitmask.png", "a.jpg", images
    )
    inst = _dataset(root, ["instance"], categories="ins_seg")[0].instances
    assert inst.track_ids.tolist() == [1, 2, 3, 4]
    assert inst.classes.tolist() == [THING_CLASSES.index("car")] * 4
    assert inst.masks.flatten(1).sum(1).tolist() == [107995, 9683, 1134, 2442]
    assert inst.boxes[0].tolist() == [199, 192, 602, 524]
    assert inst.boxes[3].tolist() == [587, 285, 715, 327]
    assert not inst.ignore.any()  # G = 4 is "occluded", not crowd / ignored
    assert inst.masks[0, 192, 320] and not inst.masks[1, 192, 320]


def test_mots_bitmask(bdd_fixtures, tmp_path, images):
    root = _bitmask_set(
        tmp_path,
        "masks/instance",
        bdd_fixtures / "label" / "segtrack_bitmask.png",
        "v/f.jpg",
        images,
    )
    inst = _dataset(root, ["mots"], categories="seg_track")[0].instances
    assert inst.track_ids.tolist() == [1, 2, 3]
    assert inst.masks.flatten(1).sum(1).tolist() == [109129, 9683, 2442]


@pytest.mark.parametrize(
    ("stem", "pixel", "value"),
    [
        ("fe189115-9981a740", (318, 630), 0),
        ("fe189115-9981a740", (329, 485), 4),
        ("fe189115-9981a740", (324, 559), 6),
        ("fe189115-9cc4a501", (334, 610), 3),
        ("fe189115-c31cac5a", (364, 564), 7),
    ],
)
def test_lane_bitmask_known_pixels(bdd_fixtures, tmp_path, stem, pixel, value, images):
    root = _bitmask_set(
        tmp_path,
        "masks/lanes",
        bdd_fixtures / "lane" / "gts" / f"{stem}.png",
        f"{stem}.jpg",
        images,
    )
    lanes = _dataset(root, ["lanes"])[0].lanes
    assert lanes.shape == (3, 720, 1280)
    # bits 0-2 category, bit 4 style, bit 5 direction (all 0 here: parallel / solid)
    assert lanes[:, pixel[0], pixel[1]].tolist() == [value + 1, 1, 1]
    assert lanes[:, 0, 0].tolist() == [0, 0, 0]  # 255 = background


def test_lane_fixture_pixel_counts(bdd_fixtures, tmp_path, images):
    stem = "fe189115-9981a740"
    root = _bitmask_set(
        tmp_path,
        "masks/lanes",
        bdd_fixtures / "lane" / "gts" / f"{stem}.png",
        f"{stem}.jpg",
        images,
    )
    category = _dataset(root, ["lanes"])[0].lanes[0]
    counts = {v: int((category == v).sum()) for v in category.unique().tolist()}
    assert counts == {0: 913138, 1: 351, 5: 3007, 7: 2444, 8: 2660}


def test_example_annotation_polygons_become_masks(bdd_fixtures, tmp_path, images):
    path = bdd_fixtures / "label" / "example_annotation.json"
    frame = load_frames(path)[0]
    images(tmp_path / "images", [f"{frame.videoName}/{frame.name}"])
    sample = _dataset(tmp_path, ["instance"], paths={"labels": str(path)})[0]
    inst = sample.instances
    assert len(inst) == 4 and inst.masks.shape == (4, 720, 1280)
    assert inst.classes.tolist() == [THING_CLASSES.index("car")] * 4
    # box of a polygon mask = extent of its vertices (to within one pixel of rasterisation)
    vertices = np.asarray(frame.labels[0].poly2d[0].vertices)
    assert abs(float(inst.boxes[0, 0]) - vertices[:, 0].min()) <= 1.5
    assert abs(float(inst.boxes[0, 3]) - vertices[:, 1].max()) <= 1.5
    assert inst.masks.flatten(1).any(1).all()


def test_every_category_toml_loads(bdd_fixtures):
    from drivemtl.data.categories import load_category_toml

    expected = {"det": 10, "box_track": 8, "seg_track": 8, "ins_seg": 8, "sem_seg": 19,
                "drivable": 2, "pose": 1, "lane_mark": 12}  # fmt: skip
    for name, count in expected.items():
        assert len(load_category_toml(bdd_fixtures / "configs" / f"{name}.toml").classes) == count
    assert load_category_toml(bdd_fixtures / "configs" / "det.toml").classes == DETECTION_CLASSES_10
    assert load_category_toml(bdd_fixtures / "configs" / "sem_seg.toml").classes == SEMANTIC_CLASSES
    assert len(load_category_toml(bdd_fixtures / "det" / "det_configs.toml").classes) == 10
    det = load_category_toml(bdd_fixtures / "configs" / "det.toml")
    assert det.resolve("person") == (0, False) and det.resolve("trailer") == (3, True)


def test_unknown_category_names_file_and_frame(tmp_path, images):
    frames = [{"name": "x.jpg", "labels": [{"id": "1", "category": "spaceship",
                                            "box2d": {"x1": 0, "y1": 0, "x2": 5, "y2": 5}}]}]  # fmt: skip
    (tmp_path / "labels.json").write_text(json.dumps(frames))
    images(tmp_path / "images", ["x.jpg"], 20, 30)
    ds = _dataset(tmp_path, ["detection"])
    with pytest.raises(
        DataError, match=r"labels\.json: frame 'x\.jpg'.*unknown category 'spaceship'"
    ):
        ds[0]


# --------------------------------------------------------------------------- pseudo labels
CAR, PED = DETECTION_CLASSES_10.index("car"), DETECTION_CLASSES_10.index("pedestrian")
GT_TAGS = [WEATHER.index("rainy"), SCENE.index("highway"), TIMEOFDAY.index("night")]


def _box(x1: float, y1: float, x2: float, y2: float) -> dict[str, float]:
    return {"x1": x1, "y1": y1, "x2": x2, "y2": y2}


def _pose_label(ident: str, box: list[float], joints: dict[str, tuple[float, float, str]]):
    nodes = [
        {"location": [x, y], "category": joint, "visibility": vis}
        for joint, (x, y, vis) in joints.items()
    ]
    return {
        "id": ident,
        "category": "pedestrian",
        "box2d": _box(*box),
        "graph": {"nodes": nodes, "edges": []},
    }


def _without_graphs(root: Path) -> list[dict]:
    """The set's label file with every pose graph removed: a set with boxes, tags and lanes."""
    frames = json.loads((root / "labels.json").read_text())
    for frame in frames:
        for label in frame["labels"]:
            label.pop("graph", None)
    (root / "labels.json").write_text(json.dumps(frames))
    return frames


def test_pose_pseudo_labels_add_keypoints_and_keep_boxes_tags_and_lanes(tmp_path, bdd_set, caplog):
    root = bdd_set(tmp_path / "s", videos=1, frames=3)
    names = [f["name"] for f in _without_graphs(root)]
    pseudo = [
        {"name": names[0], "labels": [
            # IoU 0.92 with the ground-truth pedestrian [20, 2, 26, 20]: its keypoints
            _pose_label("p1", [20.5, 2, 26, 20], {"head": (22, 5, "V"), "left_hip": (21, 8, "N")}),
            # exactly on the car, but a pedestrian: matches nothing, left out
            _pose_label("p2", [2, 4, 12, 14], {"head": (5, 5, "V")}),
            # a person the ground truth does not box: would be a false detection target
            _pose_label("p3", [30, 2, 36, 20], {"head": (33, 4, "V")}),
        ]},
        {"name": names[1], "labels": []},  # labelled for pose: nobody
        {"name": "elsewhere/x.jpg", "labels": []},  # not in the set: left out
    ]  # fmt: skip
    # names[2] is missing from the pseudo file: that frame is not labelled for pose
    (tmp_path / "pose.json").write_text(json.dumps(pseudo))
    tasks = ["detection", "tagging", "lanes", "pose"]
    ds = _dataset(root, tasks, pseudo_labels={"pose": str(tmp_path / "pose.json")})

    s = ds[0]
    assert s.tasks == set(tasks) and s.tags.tolist() == GT_TAGS and len(s.lane_lines) == 1
    assert s.instances.boxes.tolist() == [[2, 4, 12, 14], [20, 2, 26, 20]]
    assert s.instances.classes.tolist() == [CAR, PED]
    expected = torch.zeros((2, 18, 3))
    expected[1, POSE_JOINTS.index("head")] = torch.tensor([22.0, 5.0, 2.0])
    expected[1, POSE_JOINTS.index("left_hip")] = torch.tensor([21.0, 8.0, 1.0])
    assert torch.equal(s.instances.keypoints, expected)

    s = ds[1]
    assert s.tasks == set(tasks) and s.tags.tolist() == GT_TAGS
    assert s.instances.boxes.tolist() == [[3, 4, 13, 14], [20, 2, 26, 20]]
    assert not s.instances.keypoints.any()

    s = ds[2]
    assert s.tasks == {"detection", "tagging", "lanes"} and s.tags.tolist() == GT_TAGS
    assert s.instances.boxes.tolist() == [[4, 4, 14, 14], [20, 2, 26, 20]]
    assert "1 frame(s) of the pose pseudo labels" in caplog.text


def test_tagging_pseudo_labels_keep_ground_truth_boxes_and_poses(tmp_path, bdd_set):
    root = bdd_set(tmp_path / "s", videos=1, frames=2)
    frames = json.loads((root / "labels.json").read_text())
    pseudo = [
        {"name": frames[0]["name"], "attributes": {"weather": "snowy", "scene": "city street"}},
        {"name": frames[1]["name"], "attributes": {"weather": "clear", "scene": "tunnel",
                                                   "timeofday": "daytime"}},
    ]  # fmt: skip
    (tmp_path / "tags.json").write_text(json.dumps(pseudo))
    tasks = ["detection", "pose", "tagging"]
    s = _dataset(root, tasks, pseudo_labels={"tagging": str(tmp_path / "tags.json")})[0]
    # a tag the pseudo frame lacks is unknown, not the ground truth's
    assert s.tags.tolist() == [WEATHER.index("snowy"), SCENE.index("city street"), IGNORE_INDEX]
    assert s.instances.boxes.tolist() == [[2, 4, 12, 14], [20, 2, 26, 20]]
    # make_bdd_set's joint j of the pedestrian: (21 + j % 5, 3 + j), visible unless j % 3 == 0
    j = POSE_JOINTS.index("left_elbow")  # 6
    assert s.instances.keypoints[1, j].tolist() == [22.0, 9.0, 1.0]
    assert s.instances.keypoints[1, 7].tolist() == [23.0, 10.0, 2.0]
    assert not s.instances.keypoints[0].any()


def test_detection_pseudo_labels_keep_ground_truth_people_with_poses(tmp_path, bdd_set):
    root = bdd_set(tmp_path / "s", videos=1, frames=1)
    name = json.loads((root / "labels.json").read_text())[0]["name"]
    boxes = {"car": [3, 5, 13, 15], "pedestrian": [20, 2, 26, 19], "bus": [30, 1, 38, 9]}
    labels = [
        {"id": str(k), "category": c, "box2d": _box(*b)} for k, (c, b) in enumerate(boxes.items())
    ]
    (tmp_path / "det.json").write_text(json.dumps([{"name": name, "labels": labels}]))
    tasks = ["detection", "pose", "tagging"]
    s = _dataset(root, tasks, pseudo_labels={"detection": str(tmp_path / "det.json")})[0]
    # the ground-truth car is replaced; the ground-truth pedestrian carries a pose, so it stays and
    # the teacher's copy of it (IoU 17/18) is dropped
    assert s.instances.boxes.tolist() == [[20, 2, 26, 20], [3, 5, 13, 15], [30, 1, 38, 9]]
    bus = DETECTION_CLASSES_10.index("bus")
    assert s.instances.classes.tolist() == [PED, CAR, bus]
    assert s.instances.keypoints[0, 0].tolist() == [21.0, 3.0, 1.0]  # GT head, not visible
    assert not s.instances.keypoints[1:].any() and s.tags.tolist() == GT_TAGS


def test_writer_pseudo_file_for_detection_and_pose_lists_each_person_once(tmp_path, bdd_set):
    from drivemtl.data.writers import prediction_to_frame
    from drivemtl.structures.instances import Instances
    from drivemtl.structures.predictions import FramePrediction
    from drivemtl.structures.sample import SampleMeta
    from drivemtl.structures.scalabel import save_frames

    root = bdd_set(tmp_path / "s", videos=1, frames=1)
    name = json.loads((root / "labels.json").read_text())[0]["name"]
    keypoints = torch.zeros((1, 18, 3))
    keypoints[0, 0] = torch.tensor([23.0, 4.0, 0.9])  # head, kept
    keypoints[0, 1] = torch.tensor([23.0, 6.0, 0.1])  # neck below the 0.2 joint score: dropped
    boxes = torch.tensor([[1.0, 3.0, 11.0, 13.0], [19.0, 2.0, 25.0, 19.0]])
    pred = FramePrediction(
        meta=SampleMeta(name=name, image_set="s", orig_size=(24, 40)),
        detections=Instances(boxes, torch.tensor([CAR, PED]), scores=torch.tensor([0.9, 0.8])),
        poses=Instances(
            boxes[1:], torch.tensor([PED]), scores=torch.tensor([0.8]), keypoints=keypoints
        ),
    )
    frame = prediction_to_frame(pred, DETECTION_CLASSES_10, ["detection", "pose"], 0.5, 0.2)
    assert len(frame.labels) == 3  # the writer lists the pedestrian twice: box, box + pose
    save_frames([frame], tmp_path / "pseudo.json")
    source = str(tmp_path / "pseudo.json")
    ds = _dataset(
        root, ["tagging", "detection", "pose"], pseudo_labels={"detection": source, "pose": source}
    )
    s = ds[0]
    assert s.tags.tolist() == GT_TAGS
    assert s.instances.boxes.tolist() == boxes.tolist()
    assert s.instances.classes.tolist() == [CAR, PED]
    expected = torch.zeros((2, 18, 3))
    expected[1, 0] = torch.tensor([23.0, 4.0, 2.0])
    assert torch.equal(s.instances.keypoints, expected)


def test_json_pseudo_labels_on_a_set_without_label_json(tmp_path, bdd_set):
    root = bdd_set(tmp_path / "s", videos=1, frames=2)
    frames = json.loads((root / "labels.json").read_text())
    (root / "labels.json").unlink()  # a mask-only set: semantic PNGs, frames from the images
    pseudo = [{"name": frames[1]["name"], "attributes": {"weather": "foggy"}}]
    (tmp_path / "tags.json").write_text(json.dumps(pseudo))
    ds = _dataset(
        root, ["semantic", "tagging"], pseudo_labels={"tagging": str(tmp_path / "tags.json")}
    )
    assert len(ds) == 2
    assert ds[0].tasks == {"semantic"} and ds[0].tags is None
    s = ds[1]
    assert s.tasks == {"semantic", "tagging"}
    assert s.tags.tolist() == [WEATHER.index("foggy"), IGNORE_INDEX, IGNORE_INDEX]
    assert torch.equal(s.semantic[0], (torch.arange(40) + 1) % 19)


# ------------------------------------------------------------------- bad tracking sets
def _track_frame(video: str, index: int, ids=("1",), name: str | None = None) -> dict:
    """A hand-written box-tracking frame of `video` with one car box per label id."""
    labels = [
        {"id": ident, "category": "car", "box2d": {"x1": 2 + k, "y1": 2, "x2": 9 + k, "y2": 9}}
        for k, ident in enumerate(ids)
    ]
    return {
        "name": name or f"{video}-{index + 1:07d}.jpg",
        "videoName": video,
        "frameIndex": index,
        "labels": labels,
    }


def _track_set(root: Path, frames: list[dict], images, tasks=("mot",), **set_options):
    root.mkdir(parents=True, exist_ok=True)
    (root / "labels.json").write_text(json.dumps(frames))
    images(root / "images", [f"{f['videoName']}/{f['name']}" for f in frames], 16, 24)
    return _dataset(root, list(tasks), categories="box_track", **set_options)


def test_frames_of_a_video_out_of_order_name_the_file_and_frame(tmp_path, images):
    frames = [_track_frame("v1", 0), _track_frame("v1", 2), _track_frame("v1", 1)]
    with pytest.raises(
        DataError,
        match=r"labels\.json: frame 'v1-0000002\.jpg': frameIndex 1 comes after frameIndex 2 "
        r"\(frame 'v1-0000003\.jpg'\) of video 'v1'",
    ):
        _track_set(tmp_path, frames, images)


def test_a_repeated_frame_index_names_both_frames(tmp_path, images):
    frames = [_track_frame("v1", 0), _track_frame("v1", 0, name="v1-again.jpg")]
    with pytest.raises(
        DataError,
        match=r"labels\.json: frame 'v1-again\.jpg': frameIndex 0 repeats that of frame "
        r"'v1-0000001\.jpg' \(video 'v1'\)",
    ):
        _track_set(tmp_path, frames, images)


def test_interleaved_videos_each_in_order_are_read(tmp_path, images):
    frames = [_track_frame(v, i) for i in range(2) for v in ("v1", "v2")]
    ds = _track_set(tmp_path, frames, images)
    assert [(ds[i].meta.video, ds[i].meta.frame_index) for i in range(4)] == [
        ("v1", 0), ("v2", 0), ("v1", 1), ("v2", 1),
    ]  # fmt: skip


def test_a_track_id_twice_in_one_frame_is_an_error_of_a_tracking_set(tmp_path, images):
    frames = [_track_frame("v1", 0, ("3", "4")), _track_frame("v1", 1, ("3", "7", "3"))]
    with pytest.raises(
        DataError,
        match=r"labels\.json: frame 'v1-0000002\.jpg': track id '3' repeats in this frame",
    ):
        _track_set(tmp_path / "mot", frames, images)
    # a detection set does not read label ids as tracks: the same file is read
    ds = _track_set(tmp_path / "det", frames, images, tasks=("detection",))
    assert len(ds[1].instances) == 3


@pytest.mark.parametrize("sampling", ["next", "window"])
def test_a_video_shorter_than_the_clip_is_an_error(tmp_path, images, sampling):
    """Two frames cannot give any key two distinct other frames for a clip of 3 (its references
    would repeat the key or each other); a one-frame video is a still image and a video of at
    least the clip length is read."""
    frames = [_track_frame("long", i) for i in range(3)]
    frames += [_track_frame("short", i) for i in range(2)] + [_track_frame("still", 0)]
    clip = {"length": 3, "sampling": sampling}
    with pytest.raises(
        DataError,
        match=r"labels\.json: frame 'short-0000001\.jpg': video 'short' has 2 frames, fewer "
        r"than the set's clip length 3",
    ):
        _track_set(tmp_path / "a", frames, images, clip=clip)
    ds = _track_set(tmp_path / "b", frames, images, clip={**clip, "length": 2})
    assert len(ds) == 6 and len(ds[3].references) == 1
    kept = [f for f in frames if f["videoName"] != "short"]
    ds = _track_set(tmp_path / "c", kept, images, clip=clip)
    refs = [[r.meta.name for r in ds[i].references] for i in range(len(ds))]
    assert refs[3] == ["still-0000001.jpg"] * 2  # the still video copies its frame
    if sampling == "window":  # two distinct other frames for every key
        for i, names in enumerate(refs[:3]):
            key = f"long-{i + 1:07d}.jpg"
            assert len(set(names)) == 2 and key not in names
    else:  # the frames after the key, mirrored back from the end (the existing rule)
        assert [[int(n[-8:-4]) - 1 for n in names] for names in refs[:3]] == [
            [1, 2], [2, 1], [1, 0],
        ]  # fmt: skip
