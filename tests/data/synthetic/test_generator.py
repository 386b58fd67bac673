"""Dataset generation: determinism, presets writing only their labels, files consistent on disk."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from drivemtl.data.png_codecs import (
    decode_depth,
    decode_flow,
    decode_instance_rgba,
    read_png_unchanged,
)
from drivemtl.data.synthetic import SynthError, generate_dataset, parse_size
from drivemtl.data.synthetic.generator import _Job
from drivemtl.data.synthetic.presets import PRESETS, set_sizes
from drivemtl.structures.bdd import SEMANTIC_CLASSES, THING_CLASSES, THING_TO_SEMANTIC
from drivemtl.structures.scalabel import load_frames

SIZE = (96, 54)


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


@pytest.fixture(scope="module")
def all_dataset(tmp_path_factory):
    return generate_dataset(
        tmp_path_factory.mktemp("all"), "all", num_frames=3, size=SIZE, seed=7, progress=False
    )


def test_same_seed_gives_identical_files_and_other_seed_differs(tmp_path, all_dataset):
    again = generate_dataset(
        tmp_path / "again", "all", num_frames=3, size=SIZE, seed=7, progress=False
    )
    a, b = _files(all_dataset), _files(again)
    assert a.keys() == b.keys()
    assert all(a[k] == b[k] for k in a)
    other = generate_dataset(
        tmp_path / "other", "all", num_frames=3, size=SIZE, seed=8, progress=False
    )
    assert _files(other)["all/labels.json"] != a["all/labels.json"]


def test_workers_do_not_change_the_output(tmp_path):
    one = generate_dataset(
        tmp_path / "one", "bdd-sets", num_frames=4, size=SIZE, seed=1, progress=False
    )
    two = generate_dataset(
        tmp_path / "two", "bdd-sets", num_frames=4, size=SIZE, seed=1, workers=2, progress=False
    )
    assert _files(one) == _files(two)


def test_card_and_layout(all_dataset):
    card = yaml.safe_load((all_dataset / "dataset.yaml").read_text())
    assert card["sets"]["all"]["frames"] == 3 and card["sets"]["all"]["videos"] is True
    assert card["camera"]["width"] == SIZE[0] and card["seed"] == 7
    assert card["classes"]["semantic"] == list(SEMANTIC_CLASSES)
    frames = load_frames(all_dataset / "all" / "labels.json")
    assert [f.frameIndex for f in frames] == [0, 1, 2]
    for f in frames:
        assert f.name == f"vid0000/vid0000-{f.frameIndex:07d}.jpg" and f.videoName == "vid0000"
        assert set(f.attributes) == {"weather", "scene", "timeofday"}
        stem = f.name[:-4] + ".png"
        for folder in (
            "masks/semantic",
            "masks/drivable",
            "masks/lanes",
            "masks/instance",
            "masks/edges",
            "depth",
            "normals",
            "flow",
        ):
            assert (all_dataset / "all" / folder / stem).is_file(), folder
        assert (all_dataset / "all" / "images" / f.name).is_file()


def test_files_on_disk_are_mutually_consistent(all_dataset):
    sem_ids = {name: i for i, name in enumerate(SEMANTIC_CLASSES)}
    root = all_dataset / "all"
    for f in load_frames(root / "labels.json"):
        stem = f.name[:-4] + ".png"
        semantic = read_png_unchanged(root / "masks" / "semantic" / stem)
        category, ids, _ = decode_instance_rgba(
            read_png_unchanged(root / "masks" / "instance" / stem)
        )
        for index, thing in enumerate(THING_CLASSES):
            np.testing.assert_array_equal(
                semantic == sem_ids[THING_TO_SEMANTIC[thing]], category == index
            )
        for label in f.labels:
            if label.category in THING_CLASSES:
                rows, cols = np.nonzero(ids == int(label.id))
                b = label.box2d
                assert (b.x1, b.y1, b.x2, b.y2) == (
                    cols.min(),
                    rows.min(),
                    cols.max() + 1,
                    rows.max() + 1,
                )
        depth = decode_depth(read_png_unchanged(root / "depth" / stem))
        np.testing.assert_array_equal(depth > 0, semantic != sem_ids["sky"])
        _, valid = decode_flow(read_png_unchanged(root / "flow" / stem))
        assert valid.mean() > 0.3


def test_bdd_sets_write_only_their_labels(tmp_path):
    root = generate_dataset(
        tmp_path / "bdd", "bdd-sets", num_frames=10, size=SIZE, seed=2, progress=False
    )
    card = yaml.safe_load((root / "dataset.yaml").read_text())
    assert list(card["sets"]) == ["detection", "segmentation", "tracking"]
    folders = {name: sorted(str(p.relative_to(root / name)) for p in (root / name).glob("*/*") if p.is_dir())
               for name in card["sets"]}  # fmt: skip
    assert folders["detection"] == ["images/img", "masks/drivable", "masks/lanes"]
    assert folders["segmentation"] == ["images/img", "masks/instance", "masks/semantic"]
    assert folders["tracking"] == ["images/vid0000", "masks/instance"]
    det = json.loads((root / "detection" / "labels.json").read_text())
    seg = json.loads((root / "segmentation" / "labels.json").read_text())
    track = json.loads((root / "tracking" / "labels.json").read_text())
    assert all("attributes" in f and "videoName" not in f for f in det)
    assert any("graph" in label for f in det for label in f["labels"])
    assert any("poly2d" in label for f in det for label in f["labels"])
    for frames in (seg, track):
        assert all("attributes" not in f for f in frames)
        assert not any(
            "graph" in label or "poly2d" in label for f in frames for label in f["labels"]
        )
    assert all(f["videoName"] == "vid0000" for f in track) and len(track) == 3


def test_preset_sizes():
    sizes = {spec.name: n for spec, n in set_sizes("lv-disjoint-normal", 370)}
    assert sizes == {"drivable": 200, "detection": 100, "semantic": 70}
    assert [spec.tasks for spec in PRESETS["lv-full"]] == [("drivable", "detection", "semantic")]
    assert PRESETS["dense"][0].tasks == ("semantic", "depth", "normals", "edges")


def test_the_uda_preset_writes_two_visibly_different_domains(tmp_path):
    out = generate_dataset(tmp_path, "dense-uda", num_frames=8, size=SIZE, seed=2, progress=False)
    card = yaml.safe_load((out / "dataset.yaml").read_text())
    assert card["sets"]["source"]["times"] == ["daytime"]
    assert card["sets"]["target"]["weathers"] == ["foggy", "snowy", "rainy"]
    brightness = {}
    for name, weathers, times in (
        ("source", {"clear", "partly cloudy"}, {"daytime"}),
        ("target", {"foggy", "snowy", "rainy"}, {"night", "dawn/dusk"}),
    ):
        assert len(load_frames(out / name / "labels.json")) == 4
        spec = next(s for s in PRESETS["dense-uda"] if s.name == name)
        drawn = [
            _Job("", 0, name, spec.tasks, unit, 1, False, SIZE, 2, 1.0, spec.weathers, spec.times)
            .conditions() for unit in range(20)
        ]  # fmt: skip
        assert {d["weather"] for d in drawn} == weathers
        assert {d["timeofday"] for d in drawn} == times
        assert (out / name / "depth").is_dir()  # labelled: the target can be evaluated
        images = [cv2.imread(str(p)) for p in sorted((out / name / "images").rglob("*.jpg"))]
        brightness[name] = float(np.mean([img.mean() for img in images]))
    assert brightness["target"] < 0.8 * brightness["source"]


@pytest.mark.parametrize("text", ["640x361", "0x10", "abc", "64x", "-2x4", "6.4x4"])
def test_bad_sizes(text):
    with pytest.raises(SynthError, match="size"):
        parse_size(text)


def test_bad_input_fails_early(tmp_path):
    with pytest.raises(SynthError, match="unknown preset 'nope'"):
        generate_dataset(tmp_path / "x", "nope", num_frames=1, progress=False)
    with pytest.raises(SynthError, match="even"):
        generate_dataset(tmp_path / "x", "all", num_frames=1, size=(33, 20), progress=False)
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "notes.txt").write_text("mine")
    with pytest.raises(SynthError, match="not empty"):
        generate_dataset(occupied, "dense", num_frames=1, size=SIZE, progress=False)
    with pytest.raises(SynthError, match="refusing"):
        generate_dataset(occupied, "dense", num_frames=1, size=SIZE, progress=False, overwrite=True)
    assert (occupied / "notes.txt").read_text() == "mine"


def test_overwrite_replaces_a_previous_dataset(tmp_path):
    root = generate_dataset(tmp_path / "d", "all", num_frames=1, size=SIZE, seed=0, progress=False)
    generate_dataset(root, "dense", num_frames=2, size=SIZE, seed=0, progress=False, overwrite=True)
    assert sorted(p.name for p in root.iterdir()) == ["dataset.yaml", "dense"]
    assert len(load_frames(root / "dense" / "labels.json")) == 2


def test_the_tracking_preset_writes_clips_with_track_ids_masks_and_true_flow(tmp_path):
    out = generate_dataset(tmp_path, "tracking", num_frames=10, size=SIZE, seed=3, progress=False)
    card = yaml.safe_load((out / "dataset.yaml").read_text())
    assert list(card["sets"]) == ["tracking"]
    assert card["sets"]["tracking"]["tasks"] == ["mot", "mots", "flow"]
    frames = load_frames(out / "tracking" / "labels.json")
    assert [(f.videoName, f.frameIndex) for f in frames] == (
        [("vid0000", k) for k in range(8)] + [("vid0001", k) for k in range(2)]
    )
    assert all(label.category in THING_CLASSES for f in frames for label in f.labels)
    # frames are lossless PNG (JPEG's block-grid artefacts stay put while the scene moves and
    # pull a photometric flow loss towards zero flow)
    assert all(f.name.endswith(".png") for f in frames)
    images = sorted((out / "tracking" / "images").rglob("*"))
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in images if p.is_file())
    stems = sorted(p.relative_to(out / "tracking" / "images")
                   for p in (out / "tracking" / "images").rglob("*.png"))  # fmt: skip
    for kind in ("flow", "masks/instance"):
        written = sorted(p.relative_to(out / "tracking" / kind)
                         for p in (out / "tracking" / kind).rglob("*.png"))  # fmt: skip
        assert written == stems


def test_tracking_clips_read_back_favour_the_true_flow_in_the_census_loss(tmp_path):
    """What the flow task trains on, read from the files: the next frame warped by the written
    true flow matches the frame better (census loss on moving pixels) than zero flow does."""
    import torch

    from drivemtl.ops.photometric import census_loss
    from drivemtl.ops.warp import warp_by_flow

    out = generate_dataset(tmp_path, "tracking", num_frames=4, size=(192, 108), seed=5,
                           progress=False) / "tracking"  # fmt: skip
    frames = load_frames(out / "labels.json")

    def image(name: str) -> torch.Tensor:
        rgb = cv2.imread(str(out / "images" / name))[..., ::-1] / 255.0
        return torch.from_numpy(rgb.transpose(2, 0, 1).astype(np.float32))[None]

    zero, true = [], []
    path: dict[float, list[float]] = {0.0: [], 0.25: [], 0.5: []}
    identical = []
    for a, b in itertools.pairwise(frames):  # one clip, frames in order
        flow, valid = decode_flow(read_png_unchanged(out / "flow" / a.name))
        moving = valid & (np.linalg.norm(flow, axis=0) > 1.0)
        mask = torch.from_numpy(moving.astype(np.float32))[None, None]
        one, two, f = image(a.name), image(b.name), torch.from_numpy(flow)[None]
        zero.append(float(census_loss(one, two, mask)))
        true.append(float(census_loss(one, warp_by_flow(two, f), mask)))
        everywhere = torch.from_numpy(valid.astype(np.float32))[None, None]
        for alpha, losses in path.items():
            losses.append(float(census_loss(one, warp_by_flow(two, alpha * f), everywhere)))
        identical.append(float((one == two).all(1).float().mean()))
    assert np.mean(true) < np.mean(zero), (true, zero)
    # The camera model (blur + read noise, `sensor`): over all valid pixels the loss falls from
    # zero flow along the way to the true flow (as rendered, zero flow was a local minimum:
    # 41 % of the pixels were bit-identical and any sub-pixel warp of aliased texture costs).
    means = [np.mean(path[alpha]) for alpha in (0.0, 0.25, 0.5)]
    assert means[0] > means[1] > means[2], means
    assert np.mean(identical) < 0.05
