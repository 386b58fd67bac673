"""KITTI detection / tracking readers on the real fixture frames; the semantics reader on tiny
files written in the benchmark layout."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from drivemtl.data import DataConfig, DataError, build_dataset
from drivemtl.data.png_codecs import write_png
from drivemtl.structures.bdd import SEMANTIC_CLASSES, THING_CLASSES


def _ds(root, reader, tasks, split="train", **options):
    cfg = DataConfig(sets={"k": {"reader": reader, "root": str(root), "tasks": tasks}},
                     transforms={"resize": False, "normalize": False, "flip": 0.0},
                     **options)  # fmt: skip
    return build_dataset(cfg, split)


def test_detection_frames(fixtures_dir):
    ds = _ds(fixtures_dir / "kitti" / "detection", "kitti_detection", ["detection"])
    assert len(ds) == 2
    first, second = ds[0], ds[1]
    # KITTI frames differ in size (PIL reads 1224x370 and 1242x375 for these two)
    assert first.size == (370, 1224) and second.size == (375, 1242)
    assert first.meta.name == "000000.png" and first.image.std() > 10  # a real photo
    inst = first.instances
    assert len(inst) == 1 and THING_CLASSES[int(inst.classes[0])] == "pedestrian"
    assert torch.allclose(inst.boxes[0], torch.tensor([712.40, 143.00, 810.73, 307.92]))
    inst = second.instances  # Truck, Car, Cyclist + 4 DontCare
    assert [THING_CLASSES[c] for c in inst.classes.tolist()[:3]] == ["truck", "car", "rider"]
    assert len(inst) == 7 and inst.ignore.tolist() == [False] * 3 + [True] * 4


def test_tracking_frames(fixtures_dir):
    ds = _ds(fixtures_dir / "kitti" / "tracking", "kitti_tracking", ["mot"])
    assert len(ds) == 2
    s0, s1 = ds[0], ds[1]
    assert (s0.meta.video, s0.meta.frame_index, s1.meta.frame_index) == ("0001", 0, 1)
    # frame 0: 5 DontCare + 7 cars (track ids 0..6); frame 1: 6 DontCare + the same 7 cars
    assert len(s0.instances) == 12 and len(s1.instances) == 13
    cars = s1.instances[~s1.instances.ignore]
    assert cars.track_ids.tolist() == list(range(7))
    assert torch.allclose(cars.boxes[0], torch.tensor([798.330176, 170.197116, 1241.0, 374.0]))


def test_bad_label_line_names_file_and_line(tmp_path, image_writer):
    image_writer(tmp_path / "image_2" / "000000.png", 10, 20)
    (tmp_path / "label_2").mkdir()
    (tmp_path / "label_2" / "000000.txt").write_text(
        "Car 0 0 0 1 1 9 9 1 1 1 1 1 1 0\nBoat 0 0 0 1 1 9 9 1 1 1 1 1 1 0\n"
    )
    with pytest.raises(
        DataError, match=r"000000\.txt: frame '000000\.png': line 2: unknown KITTI type 'Boat'"
    ):
        _ds(tmp_path, "kitti_detection", ["detection"])[0]


# Cityscapes label ids written into the KITTI semantic PNGs and the train ids expected for them,
# by hand from the Cityscapes label table: 7 road -> 0, 8 sidewalk -> 1, 11 building -> 2,
# 21 vegetation -> 8, 23 sky -> 10, 24 person -> 11, 26 car -> 13, 33 bicycle -> 18; 0 unlabeled,
# 1 ego vehicle, 6 ground, 9 parking, 34 (no such id) and 255 (license plate, id -1 as uint8) -> 255.
SEM_IDS = [
    np.array([[7, 7, 8, 0], [26, 1, 255, 33]], np.uint8),
    np.array([[23, 23, 23], [11, 21, 6], [24, 9, 34]], np.uint8),
]
SEM_TRAIN = [
    [[0, 0, 1, 255], [13, 255, 255, 18]],
    [[10, 10, 10], [2, 8, 255], [11, 255, 255]],
]
NAMES = ["000000_10", "000001_10"]


def _rgb(h, w, seed):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _write_semantics(root, image_writer, labels=True):
    for k, (name, ids) in enumerate(zip(NAMES, SEM_IDS, strict=True)):
        image_writer(root / "image_2" / f"{name}.png", *ids.shape, _rgb(*ids.shape, k))
        if labels:
            write_png(root / "semantic" / f"{name}.png", ids)


def test_semantics_train_ids_images_and_names(tmp_path, image_writer):
    _write_semantics(tmp_path, image_writer)
    ds = _ds(tmp_path, "kitti_semantics", ["semantic"])
    assert len(ds) == 2
    for k, name in enumerate(NAMES):
        s = ds[k]
        assert s.meta.name == name and s.tasks == frozenset({"semantic"})
        rgb = _rgb(*SEM_IDS[k].shape, k)
        assert torch.equal(s.image, torch.from_numpy(rgb.transpose(2, 0, 1).astype(np.float32)))
        assert s.semantic.tolist() == SEM_TRAIN[k]
    assert SEMANTIC_CLASSES[13] == "car" and SEMANTIC_CLASSES[18] == "bicycle"  # table order


def test_semantics_images_only_and_split_in_root(tmp_path, image_writer):
    # testing/image_2 has no labels: tasks [] reads the images alone; {split} fills the root
    _write_semantics(tmp_path / "testing", image_writer, labels=False)
    ds = _ds(tmp_path / "{split}", "kitti_semantics", [], split="testing")
    assert [ds[i].meta.name for i in range(len(ds))] == NAMES
    s = ds[1]
    assert s.semantic is None and s.tasks == frozenset()
    assert s.image[:, 2, 1].tolist() == _rgb(3, 3, 1)[2, 1].astype(float).tolist()


def test_semantics_missing_label_fails_at_start_or_skips(tmp_path, image_writer):
    _write_semantics(tmp_path, image_writer)
    (tmp_path / "semantic" / "000001_10.png").unlink()
    with pytest.raises(
        DataError,
        match=r"semantic[/\\]000001_10\.png: frame '000001_10': semantic PNG not found "
        r"\(every image in .*image_2 needs one\)",
    ):
        _ds(tmp_path, "kitti_semantics", ["semantic"])
    ds = _ds(tmp_path, "kitti_semantics", ["semantic"], on_error="skip")
    assert len(ds) == 1 and ds[0].meta.name == "000000_10"


def test_semantics_label_size_mismatch(tmp_path, image_writer):
    _write_semantics(tmp_path, image_writer)
    write_png(tmp_path / "semantic" / "000000_10.png", np.full((2, 5), 7, np.uint8))
    ds = _ds(tmp_path, "kitti_semantics", ["semantic"])
    with pytest.raises(
        DataError,
        match=r"000000_10\.png: frame '000000_10': semantic PNG is 2x5 but the image is 2x4 \(HxW\)",
    ):
        ds[0]


def test_semantics_empty_folder_and_unsupported_task(tmp_path, image_writer):
    (tmp_path / "image_2").mkdir()
    with pytest.raises(DataError, match=r"image_2: no KITTI \*\.png images found"):
        _ds(tmp_path, "kitti_semantics", [])
    _write_semantics(tmp_path, image_writer)
    with pytest.raises(
        DataError, match=r"reads only the 'semantic' task \(or none\), not \['depth'\]"
    ):
        _ds(tmp_path, "kitti_semantics", ["semantic", "depth"])


def _tracking_set(root, image_writer, frames: int, lines: list[str], seq: str = "0000"):
    """A KITTI tracking sequence of `frames` tiny images and the given label lines."""
    for i in range(frames):
        image_writer(root / "image_02" / seq / f"{i:06d}.png", 10, 20)
    (root / "label_02").mkdir(exist_ok=True)
    (root / "label_02" / f"{seq}.txt").write_text("".join(f"{line}\n" for line in lines))


CAR = "Car 0 0 0 1 1 9 9 1 1 1 1 1 1 0"
DONT_CARE = "DontCare -1 -1 -10 1 1 5 5 -1 -1 -1 -1000 -1000 -1000 -10"


def test_tracking_label_lines_out_of_frame_order(tmp_path, image_writer):
    _tracking_set(tmp_path, image_writer, 2, [f"1 0 {CAR}", f"0 0 {CAR}"])
    with pytest.raises(
        DataError, match=r"0000\.txt: frame '0000/000000\.png': line 2: frame 0 comes after frame 1"
    ):
        _ds(tmp_path, "kitti_tracking", ["mot"])


def test_tracking_track_id_twice_in_one_frame(tmp_path, image_writer):
    lines = [f"0 3 {CAR}", f"0 -1 {DONT_CARE}", f"0 -1 {DONT_CARE}", f"1 3 {CAR}", f"1 3 {CAR}"]
    _tracking_set(tmp_path, image_writer, 2, lines)
    with pytest.raises(
        DataError, match=r"0000\.txt: frame '0000/000001\.png': line 5: track id 3 repeats"
    ):
        _ds(tmp_path, "kitti_tracking", ["mot"])
    # DontCare areas (track id -1) may repeat, and one id in two frames is one track
    _tracking_set(tmp_path, image_writer, 2, lines[:4])
    ds = _ds(tmp_path, "kitti_tracking", ["mot"])
    assert ds[0].instances.track_ids.tolist() == [3, -1, -1]
    assert ds[1].instances.track_ids.tolist() == [3]


def test_tracking_sequence_shorter_than_the_clip(tmp_path, image_writer):
    _tracking_set(tmp_path, image_writer, 2, [f"0 0 {CAR}", f"1 0 {CAR}"])
    cfg = DataConfig(
        sets={"k": {"reader": "kitti_tracking", "root": str(tmp_path), "tasks": ["mot"],
                    "clip": {"length": 3}}},
        transforms={"resize": False, "normalize": False, "flip": 0.0},
    )  # fmt: skip
    with pytest.raises(
        DataError,
        match=r"label_02: frame '0000/000000\.png': video '0000' has 2 frames, fewer than the "
        r"set's clip length 3",
    ):
        build_dataset(cfg, "train")
