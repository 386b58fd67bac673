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
    SEMANTIC_CLASSES,
    THING_CLASSES,
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
