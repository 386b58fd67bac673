"""Datasets over the BDD100K-like layout: every label type decoded, label settings, reference frames,
and bad input failing with the file, the frame and the problem (or skipped with on_error=skip)."""

from __future__ import annotations

import json
import logging
import random

import numpy as np
import pytest
import torch

from drivemtl.data import DataConfig, DataError, build_dataset
from drivemtl.structures.bdd import POSE_JOINTS, SCENE, TIMEOFDAY, WEATHER

ALL = ["tagging", "semantic", "drivable", "lanes", "detection", "instance", "pose", "depth",
       "normals", "edges", "mot", "mots", "flow"]  # fmt: skip
RAW = {"resize": False, "normalize": False, "flip": 0.0}


def _cfg(root, tasks=ALL, **extra) -> DataConfig:
    sets = {"s": {"root": str(root), "tasks": tasks, **extra.pop("set", {})}}
    return DataConfig(sets=sets, transforms=extra.pop("transforms", RAW), **extra)


def test_every_label_type_decodes(tmp_path, bdd_set):
    bdd_set(tmp_path)
    ds = build_dataset(_cfg(tmp_path))
    assert len(ds) == 6 and ds.sets == ["s"] and ds.set_of(5) == "s"
    s = ds[1]  # video 0, frame 1
    assert s.meta.name == "vid0000/vid0000-0000001.jpg" and s.meta.frame_index == 1
    assert s.size == (24, 40) and s.tasks == set(ALL)
    assert abs(float(s.image.mean()) - 40) < 2  # JPEG of constant 40
    assert s.tags.tolist() == [WEATHER.index("rainy"), SCENE.index("highway"),
                               TIMEOFDAY.index("night")]  # fmt: skip
    x = np.arange(40)
    assert torch.equal(s.semantic[3], torch.from_numpy((x + 1) % 19))
    assert s.drivable[0, 0] == 2 and s.drivable[23, 0] == 0
    assert s.lanes[:, 5, 7].tolist() == [7, 1, 2] and s.lanes[:, 5, 8].tolist() == [0, 0, 0]
    assert s.edges[:, 10].eq(1).all() and s.edges[:, 11].eq(0).all()
    assert torch.allclose(s.depth[0], torch.from_numpy(1 + x / 8).float(), atol=1 / 512)
    assert torch.allclose(s.flow[0], torch.full((24, 40), 1.5)) and s.flow_valid.all()
    assert torch.allclose(s.flow[1], torch.full((24, 40), -0.25))
    assert torch.allclose(s.normals[:, 0, 0], torch.tensor([0.0, -1.0, 0.0]), atol=1e-4)
    inst = s.instances
    assert inst.boxes.tolist() == [[3, 4, 13, 14], [20, 2, 26, 20]]
    assert inst.classes.tolist() == [2, 0] and inst.track_ids.tolist() == [0, 1]
    assert inst.masks.flatten(1).sum(1).tolist() == [100, 108]  # matched to the bitmask by id
    assert inst.keypoints.shape == (2, 18, 3) and inst.keypoints[0].abs().sum() == 0
    head = inst.keypoints[1, POSE_JOINTS.index("head")]
    assert head.tolist() == [21.0, 3.0, 1.0]  # node 0 is "N" (not visible)
    assert inst.keypoints[1, 1].tolist() == [22.0, 4.0, 2.0]
    line = s.lane_lines[0]
    assert (line.category, line.direction, line.style) == (6, 0, 1)
    assert line.vertices.tolist() == [[5.0, 23.0], [15.0, 10.0]]
    last = ds[2]
    assert last.flow is None and last.tasks == set(ALL) - {"flow"}  # no flow after the last frame


def test_load_size_resizes_every_label(tmp_path, bdd_set):
    bdd_set(tmp_path)
    s = build_dataset(_cfg(tmp_path, set={"load_size": (12, 20)}))[0]
    assert s.size == (12, 20) and s.meta.orig_size == (24, 40)
    assert s.instances.boxes[0].tolist() == [1.0, 2.0, 6.0, 7.0]
    assert torch.allclose(s.flow[0], torch.full((12, 20), 0.75))
    assert s.instances.masks.shape == (2, 12, 20) and s.semantic.shape == (12, 20)


def test_reference_frames(tmp_path, bdd_set):
    bdd_set(tmp_path, videos=1, frames=5)
    ds = build_dataset(_cfg(tmp_path, tasks=["mot"], set={"clip": {"sampling": "next"}}))
    assert [ds[i].reference.meta.frame_index for i in range(5)] == [1, 2, 3, 4, 3]
    ds = build_dataset(_cfg(tmp_path, tasks=["mot"], set={"clip": {"window": 1}}))
    for i in range(5):
        ref = ds[i].reference.meta.frame_index
        assert ref != i and abs(ref - i) == 1


def test_clip_window_sampling_by_hand(tmp_path, bdd_set):
    bdd_set(tmp_path, videos=1, frames=6)
    ds = build_dataset(_cfg(tmp_path, tasks=["mot"], set={"clip": {"length": 3, "window": 2}}))
    base = ds.datasets[0]
    seen: dict[int, set[int]] = {k: set() for k in range(6)}
    for key in range(6):
        for seed in range(40):
            refs = base.reference_indices(key, random.Random(seed))
            assert len(refs) == 2 and len(set(refs)) == 2  # two distinct reference frames
            assert all(r != key and abs(r - key) <= 2 for r in refs)
            seen[key].update(refs)
    # every frame within the window is drawn at some point, and nothing else
    assert seen[0] == {1, 2} and seen[3] == {1, 2, 4, 5} and seen[5] == {3, 4}
    clip = ds[3]
    assert clip.clip[0] is clip and clip.meta.frame_index == 3 and len(clip.references) == 2
    assert all(abs(r.meta.frame_index - 3) <= 2 for r in clip.references)


def test_clip_next_sampling_mirrors_at_the_end_of_a_video(tmp_path, bdd_set):
    bdd_set(tmp_path, videos=1, frames=5)
    ds = build_dataset(
        _cfg(tmp_path, tasks=["mot"], set={"clip": {"length": 3, "sampling": "next"}})
    )
    refs = [[r.meta.frame_index for r in ds[i].references] for i in range(5)]
    assert refs == [[1, 2], [2, 3], [3, 4], [4, 3], [3, 2]]


def test_clip_of_a_still_frame_copies_the_key_or_has_no_references(tmp_path, bdd_set):
    bdd_set(tmp_path, videos=2, frames=1)  # one-frame videos are still images
    copy = build_dataset(_cfg(tmp_path, tasks=["detection"], set={"clip": {"length": 3}}))[1]
    assert len(copy.references) == 2
    for ref in copy.references:
        assert ref.meta.name == copy.meta.name and torch.equal(ref.image, copy.image)
        assert torch.equal(ref.instances.boxes, copy.instances.boxes)
        assert ref.image.data_ptr() != copy.image.data_ptr()  # a copy, transformed on its own
    alone = build_dataset(_cfg(tmp_path, tasks=["detection"], set={"clip": {"still": "none"}}))[1]
    assert alone.references == []


def test_label_setting_selects_sets_tasks_and_subsets(tmp_path, bdd_set):
    bdd_set(tmp_path / "a")
    bdd_set(tmp_path / "b", videos=1)
    cfg = DataConfig(
        sets={
            "a": {"root": str(tmp_path / "a"), "tasks": ["detection", "semantic"]},
            "b": {"root": str(tmp_path / "b"), "tasks": ["detection", "semantic"]},
        },
        label_settings={
            "disjoint": {
                "a": {"tasks": ["detection"], "subset": {"frames": 2, "offset": 1}},
                "b": {"tasks": ["semantic"]},
            },
            "only_b": {"b": {}},
        },
        label_setting="disjoint",
        transforms=RAW,
    )
    ds = build_dataset(cfg)
    assert ds.sets == ["a", "b"] and len(ds) == 2 + 3
    assert ds.set_tasks("a") == {"detection"} and ds.set_tasks("b") == {"semantic"}
    assert ds[0].meta.frame_index == 1 and ds[0].semantic is None
    assert ds[3].instances is None and ds[3].semantic is not None
    assert build_dataset(cfg.model_copy(update={"label_setting": "only_b"})).sets == ["b"]
    with pytest.raises(ValueError, match="label_setting 'full' is not defined"):
        DataConfig(sets=cfg.sets, label_settings=cfg.label_settings, label_setting="full")


def test_subset_names_file_and_splits(tmp_path, bdd_set):
    bdd_set(tmp_path)
    names = tmp_path / "names.txt"
    names.write_text("vid0001/vid0001-0000002.jpg\nvid0000/vid0000-0000000.jpg\n")
    ds = build_dataset(
        _cfg(tmp_path, tasks=["detection"], set={"subset": {"names_file": str(names)}})
    )
    assert [ds[i].meta.name for i in range(len(ds))] == names.read_text().split()
    cfg = _cfg(tmp_path, tasks=["detection"], set={"splits": ["val"]})
    with pytest.raises(ValueError, match="no image set is part of split 'train'"):
        build_dataset(cfg, "train")
    assert len(build_dataset(cfg, "val")) == 6


# --------------------------------------------------------------------------- bad input
def _labels(root):
    return json.loads((root / "labels.json").read_text())


def _write_labels(root, frames):
    (root / "labels.json").write_text(json.dumps(frames))


def test_missing_image(tmp_path, bdd_set):
    bdd_set(tmp_path)
    (tmp_path / "images/vid0000/vid0000-0000001.jpg").unlink()
    ds = build_dataset(_cfg(tmp_path, tasks=["detection"]))
    with pytest.raises(
        DataError,
        match=r"vid0000-0000001\.jpg: frame 'vid0000/vid0000-0000001\.jpg': image not found",
    ):
        ds[1]


def test_corrupt_png(tmp_path, bdd_set):
    bdd_set(tmp_path)
    (tmp_path / "masks/semantic/vid0000/vid0000-0000000.png").write_bytes(b"\x89PNG\r\n garbage")
    ds = build_dataset(_cfg(tmp_path, tasks=["semantic"]))
    with pytest.raises(
        DataError,
        match=r"masks/semantic/vid0000/vid0000-0000000\.png: frame '.*': semantic PNG is corrupt",
    ):
        ds[0]


def test_malformed_json(tmp_path, bdd_set):
    bdd_set(tmp_path)
    (tmp_path / "labels.json").write_text('[{"name": "a.jpg", ')
    with pytest.raises(DataError, match=r"labels\.json: malformed JSON"):
        build_dataset(_cfg(tmp_path, tasks=["detection"]))


def test_unknown_category(tmp_path, bdd_set):
    bdd_set(tmp_path)
    frames = _labels(tmp_path)
    frames[4]["labels"][0]["category"] = "dragon"
    _write_labels(tmp_path, frames)
    ds = build_dataset(_cfg(tmp_path, tasks=["detection"]))
    with pytest.raises(
        DataError,
        match=r"labels\.json: frame 'vid0001/vid0001-0000001\.jpg': label '1': unknown category 'dragon'",
    ):
        ds[4]


def test_inverted_box(tmp_path, bdd_set):
    bdd_set(tmp_path)
    frames = _labels(tmp_path)
    frames[2]["labels"][0]["box2d"] = {"x1": 10, "y1": 1, "x2": 5, "y2": 8}
    _write_labels(tmp_path, frames)
    with pytest.raises(
        DataError,
        match=r"labels\.json: frame 'vid0000/vid0000-0000002\.jpg', label id '1'.*x2 < x1",
    ):
        build_dataset(_cfg(tmp_path, tasks=["detection"]))


def test_bitmask_size_mismatch(tmp_path, bdd_set):
    from drivemtl.data.png_codecs import write_png

    bdd_set(tmp_path)
    write_png(tmp_path / "masks/drivable/vid0000/vid0000-0000002.png", np.zeros((12, 40), np.uint8))
    ds = build_dataset(_cfg(tmp_path, tasks=["drivable"]))
    with pytest.raises(
        DataError,
        match=r"vid0000-0000002\.png: frame '.*': drivable PNG is 12x40 but the image is 24x40",
    ):
        ds[2]


def test_wrong_encoding_is_named(tmp_path, bdd_set):
    from drivemtl.data.png_codecs import write_png

    bdd_set(tmp_path)
    write_png(tmp_path / "depth/vid0000/vid0000-0000000.png", np.zeros((24, 40), np.uint8))
    with pytest.raises(DataError, match="depth PNG is uint8, expected uint16"):
        build_dataset(_cfg(tmp_path, tasks=["depth"]))[0]


def test_on_error_skip_logs_and_counts(tmp_path, bdd_set, caplog):
    bdd_set(tmp_path)
    frames = _labels(tmp_path)
    frames[3]["labels"][0]["box2d"] = {"x1": 10, "y1": 1, "x2": 5, "y2": 8}  # dropped at indexing
    _write_labels(tmp_path, frames)
    (tmp_path / "images/vid0000/vid0000-0000001.jpg").unlink()  # replaced when read
    caplog.set_level(logging.WARNING, logger="drivemtl")
    ds = build_dataset(_cfg(tmp_path, tasks=["detection"], on_error="skip"))
    assert len(ds) == 5 and ds.skipped == 1
    names = [ds[i].meta.name for i in range(len(ds))]
    assert names[1] == "vid0000/vid0000-0000002.jpg"  # the next good frame stands in
    assert ds.skipped == 2 and ds.report_skipped() == 2
    text = caplog.text
    assert "x2 < x1" in text and "image not found" in text and "skipped 2 frame(s)" in text


def test_on_error_skip_drops_bad_frames_for_evaluation(tmp_path, bdd_set, caplog):
    from drivemtl.data import SAMPLERS, build_loader

    bdd_set(tmp_path)
    (tmp_path / "images/vid0000/vid0000-0000001.jpg").write_bytes(b"not a JPEG")
    (tmp_path / "images/vid0001/vid0001-0000000.jpg").unlink()
    cfg = _cfg(tmp_path, tasks=["detection"], on_error="skip")
    ds = build_dataset(cfg, "val", drop_skipped=True)
    assert ds[1] is None and ds.set_skipped("s") == 1
    train = build_dataset(cfg)  # training still fills the batch with the next good frame
    assert train[1].meta.name == "vid0000/vid0000-0000002.jpg"
    loader = build_loader(ds, SAMPLERS.get("none")(ds, 3, drop_last=False), num_workers=0)
    names = sorted(m.name for batch in loader for m in batch.metas)
    assert names == [
        "vid0000/vid0000-0000000.jpg", "vid0000/vid0000-0000002.jpg",
        "vid0001/vid0001-0000001.jpg", "vid0001/vid0001-0000002.jpg",
    ]  # fmt: skip
    assert ds.set_skipped("s") == 3  # ds[1] above, then both bad frames in the pass
    only_bad = build_loader(ds, [[1, 3]], num_workers=0)  # a batch of bad frames yields nothing
    assert list(only_bad) == []


def test_empty_label_json_names_the_file(tmp_path, bdd_set):
    bdd_set(tmp_path)
    frames = _labels(tmp_path)
    _write_labels(tmp_path, [])
    with pytest.raises(DataError, match=r"labels\.json: no frames in the label JSON$"):
        build_dataset(_cfg(tmp_path, tasks=["detection"]))
    for frame in frames[:2]:
        frame["labels"][0]["box2d"] = {"x1": 10, "y1": 1, "x2": 5, "y2": 8}
    _write_labels(tmp_path, frames[:2])
    with pytest.raises(DataError, match=r"labels\.json: no valid frames \(2 skipped\) in the"):
        build_dataset(_cfg(tmp_path, tasks=["detection"], on_error="skip"))


def test_boxes_are_clipped_to_the_image_and_empty_ones_dropped(tmp_path, bdd_set, caplog):
    bdd_set(tmp_path)  # images 40 x 24; label 0 is the car, label 1 the pedestrian with pose
    frames = _labels(tmp_path)
    boxes = [
        (-5, -3, 10, 30),  # 0: partly outside: clipped
        (45, 2, 60, 10),  # 1: right of the image: dropped
        (40, 2, 48, 10),  # 2: empty once clipped (x1 = x2 = 40): dropped
        (-9, -9, -1, -1),  # 3: above-left of the image: dropped
        (5, 5, 5, 10),  # 4: zero width: dropped
    ]
    for frame, box in zip(frames, boxes, strict=False):
        frame["labels"][0]["box2d"] = dict(zip(("x1", "y1", "x2", "y2"), box, strict=True))
    _write_labels(tmp_path, frames)
    caplog.set_level(logging.WARNING, logger="drivemtl")
    ds = build_dataset(_cfg(tmp_path, tasks=["detection", "pose"]))
    inst = [ds[i].instances for i in range(6)]
    assert inst[0].boxes[0].tolist() == [0.0, 0.0, 10.0, 24.0] and len(inst[0]) == 2
    for k in (1, 2, 3, 4):
        assert len(inst[k]) == 1 and inst[k].classes.tolist() == [0]  # the pedestrian is left
        assert inst[k].keypoints.shape == (1, 18, 3) and inst[k].track_ids.tolist() == [1]
    assert len(inst[5]) == 2
    first = [r for r in caplog.records if "outside the image" in r.getMessage()]
    assert len(first) == 1 and "vid0000-0000001.jpg" in first[0].getMessage()
    assert ds.datasets[0].reader.dropped_boxes == 4
    caplog.clear()
    ds.report_skipped()
    assert "set s: dropped 4 box(es) outside the image or empty after clipping" in caplog.text


def test_pseudo_label_sources_replace_the_sets_labels(tmp_path, bdd_set):
    from drivemtl.data.png_codecs import write_png

    bdd_set(tmp_path / "s")
    pseudo = tmp_path / "pseudo"
    for name in (
        "vid0000/vid0000-0000000",
        "vid0000/vid0000-0000001",
        "vid0000/vid0000-0000002",
        "vid0001/vid0001-0000000",
        "vid0001/vid0001-0000001",
        "vid0001/vid0001-0000002",
    ):
        write_png(pseudo / "semantic" / f"{name}.png", np.full((24, 40), 5, np.uint8))  # fmt: skip
    frames = _labels(tmp_path / "s")
    for frame in frames:
        frame["labels"] = [
            {"id": "9", "category": "bus", "box2d": {"x1": 1, "y1": 2, "x2": 3, "y2": 4}}
        ]
    (pseudo / "det.json").write_text(json.dumps(frames))
    cfg = _cfg(tmp_path / "s", tasks=["semantic", "detection"], set={
        "pseudo_labels": {"semantic": str(pseudo / "semantic"), "detection": str(pseudo / "det.json")}})  # fmt: skip
    s = build_dataset(cfg)[3]
    assert (s.semantic == 5).all()
    assert s.instances.boxes.tolist() == [[1, 2, 3, 4]] and s.instances.classes.tolist() == [4]


def test_remap_maps_class_maps_onto_another_class_list(tmp_path, bdd_set):
    bdd_set(tmp_path)
    remap = {"semantic": {"classes": ["flat", "vehicle"],
                          "map": {"road": "flat", "sidewalk": "flat", "car": "vehicle",
                                  "bus": "vehicle"}}}  # fmt: skip
    plain = build_dataset(_cfg(tmp_path, ["semantic"]))[1].semantic
    mapped = build_dataset(_cfg(tmp_path, ["semantic"], set={"remap": remap}))[1].semantic
    names = ("road", "sidewalk", "building", "wall", "fence", "pole", "traffic light",
             "traffic sign", "vegetation", "terrain", "sky", "person", "rider", "car", "truck",
             "bus", "train", "motorcycle", "bicycle")  # fmt: skip
    new = {"road": 0, "sidewalk": 0, "car": 1, "bus": 1}
    expected = plain.clone()
    for old in range(256):
        name = names[old] if old < len(names) else None
        expected[plain == old] = new.get(name, 255)
    assert mapped.dtype == plain.dtype and torch.equal(mapped, expected)
    assert set(mapped.unique().tolist()) == {0, 1, 255}


@pytest.mark.parametrize(
    ("remap", "message"),
    [
        ({"lanes": {"classes": ["a"], "map": {"road": "a"}}}, "'lanes' cannot be remapped"),
        ({"semantic": {"classes": ["a"], "map": {"rd": "a"}}}, r"\['rd'\] are not semantic"),
        ({"semantic": {"classes": ["a"], "map": {"road": "b"}}}, r"targets \['b'\] are not in"),
        ({"semantic": {"classes": ["a", "a"], "map": {"road": "a"}}}, "repeat a name"),
    ],
)
def test_bad_remaps_name_what_is_wrong(tmp_path, remap, message):
    with pytest.raises(ValueError, match=message):
        _cfg(tmp_path, ["semantic"], set={"remap": remap})
