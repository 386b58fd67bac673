"""Cityscapes reader on tiny files written in the official layout."""

from __future__ import annotations

import json

import numpy as np
import torch

from drivemtl.data import DataConfig, build_dataset
from drivemtl.data.png_codecs import write_png
from drivemtl.structures.bdd import IGNORE_INDEX, SEMANTIC_CLASSES, THING_CLASSES

H, W = 16, 32
STEM = "aachen/aachen_000000_000019"


def _write_city(root, image_writer):
    image_writer(root / f"leftImg8bit/train/{STEM}_leftImg8bit.png", H, W, 90)
    labels = np.full((H, W), 7, np.uint8)  # road
    labels[:4] = 23  # sky
    labels[8:12, 4:10] = 26  # car
    labels[0, 0] = 3  # out of roi -> ignore
    write_png(root / f"gtFine/train/{STEM}_gtFine_labelIds.png", labels)
    inst = labels.astype(np.uint16)
    inst[8:12, 4:10] = 26000 + 3
    inst[12:14, 20:22] = 24000  # a person
    write_png(root / f"gtFine/train/{STEM}_gtFine_instanceIds.png", inst)
    # a fronto-parallel wall 10 m away: disparity = baseline * fx / 10 m
    fx, baseline = 200.0, 0.2
    disparity = np.full((H, W), baseline * fx / 10.0)
    png = (disparity * 256 + 1).astype(np.uint16)
    png[0, :] = 0  # invalid row
    write_png(root / f"disparity/train/{STEM}_disparity.png", png)
    camera = {"extrinsic": {"baseline": baseline},
              "intrinsic": {"fx": fx, "fy": fx, "u0": W / 2, "v0": H / 2}}  # fmt: skip
    path = root / f"camera/train/{STEM}_camera.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(camera))


def test_cityscapes_semantic_instances_depth_normals(tmp_path, image_writer):
    _write_city(tmp_path, image_writer)
    cfg = DataConfig(
        sets={"city": {"reader": "cityscapes", "root": str(tmp_path),
                       "tasks": ["semantic", "instance", "depth", "normals"]}},
        transforms={"resize": False, "normalize": False, "flip": 0.0},
    )  # fmt: skip
    s = build_dataset(cfg)[0]
    assert s.meta.name == f"{STEM}_leftImg8bit.png"
    sem = s.semantic
    assert sem[5, 20] == SEMANTIC_CLASSES.index("road") and sem[2, 5] == SEMANTIC_CLASSES.index(
        "sky"
    )
    assert sem[9, 5] == SEMANTIC_CLASSES.index("car") and sem[0, 0] == IGNORE_INDEX
    inst = s.instances
    assert [THING_CLASSES[c] for c in inst.classes.tolist()] == ["pedestrian", "car"]
    assert inst.boxes.tolist() == [[20, 12, 22, 14], [4, 8, 10, 12]]
    assert torch.allclose(s.depth[1:], torch.full((H - 1, W), 10.0), atol=0.01)
    assert (s.depth[0] == 0).all()
    interior = s.normals[:, 3:-1, 1:-1]
    assert torch.allclose(
        interior, torch.tensor([0.0, 0.0, -1.0])[:, None, None].expand_as(interior), atol=1e-3
    )
    assert (s.normals[:, :2] == 0).all()  # next to invalid depth


def test_load_size_scales_intrinsics_for_normals(tmp_path, image_writer):
    _write_city(tmp_path, image_writer)
    cfg = DataConfig(
        sets={"city": {"reader": "cityscapes", "root": str(tmp_path), "tasks": ["depth", "normals"],
                       "load_size": (8, 16)}},
        transforms={"resize": False, "normalize": False, "flip": 0.0},
    )  # fmt: skip
    s = build_dataset(cfg)[0]
    assert s.size == (8, 16) and torch.allclose(s.depth[2:], torch.full((6, 16), 10.0), atol=0.01)
    interior = s.normals[:, 3:-1, 1:-1]
    assert torch.allclose(interior[2], torch.full_like(interior[2], -1.0), atol=1e-3)
