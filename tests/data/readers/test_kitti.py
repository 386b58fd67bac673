"""KITTI detection / tracking readers on the real fixture frames."""

from __future__ import annotations

import pytest
import torch

from drivemtl.data import DataConfig, DataError, build_dataset
from drivemtl.structures.bdd import THING_CLASSES


def _ds(root, reader, tasks):
    cfg = DataConfig(sets={"k": {"reader": reader, "root": str(root), "tasks": tasks}},
                     transforms={"resize": False, "normalize": False, "flip": 0.0})  # fmt: skip
    return build_dataset(cfg)


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
