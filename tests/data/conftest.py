"""Helpers for data-layer tests: placeholder images for the label-only fixtures."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from drivemtl.structures.bdd import POSE_JOINTS


def write_image(path: Path, height: int, width: int, value: int | np.ndarray = 0) -> None:
    """Write an RGB image file (PNG or JPEG by suffix); `value` is a fill or an [H, W, 3] array."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(value, np.ndarray):
        rgb = value.astype(np.uint8)
    else:
        rgb = np.full((height, width, 3), value, dtype=np.uint8)
    ok, data = cv2.imencode(path.suffix, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    assert ok
    path.write_bytes(data.tobytes())


def place_images(root: Path, names: list[str], height: int = 720, width: int = 1280) -> None:
    """One shared black JPEG hard-linked under `root/<name>` for every frame name."""
    source = root.parent / f"_black_{height}x{width}.jpg"
    if not source.exists():
        write_image(source, height, width)
    for name in names:
        target = root / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.exists():
            target.hardlink_to(source)


@pytest.fixture
def bdd_fixtures(fixtures_dir: Path) -> Path:
    """`../shared/fixtures/bdd100k` (skips where absent)."""
    return fixtures_dir / "bdd100k"


@pytest.fixture(scope="session")
def images():
    """`place_images(root, names, height, width)`: placeholder images for label-only fixtures."""
    return place_images


@pytest.fixture
def image_writer():
    """`write_image(path, height, width, value)`."""
    return write_image


def make_bdd_set(root: Path, videos: int = 2, frames: int = 3, h: int = 24, w: int = 40) -> Path:
    """A tiny image set in the synthetic world's BDD100K-like layout with every label type.

    Frame f of video v: one car box (id "1") and one pedestrian with pose (id "2"), a lane line,
    semantic = (x + f) % 19, drivable = row-band, lanes bitmask, instance RGBA, edges, depth =
    1 + x / 8 metres, flow = (1.5, -0.25) px (absent for the last frame), normals = (0, -1, 0).
    """
    from drivemtl.data.png_codecs import (
        encode_depth,
        encode_flow,
        encode_instance_rgba,
        encode_lane_byte,
        encode_normals,
        write_png,
    )

    labels = []
    y, x = np.mgrid[0:h, 0:w]
    for v in range(videos):
        video = f"vid{v:04d}"
        for f in range(frames):
            name = f"{video}/{video}-{f:07d}.jpg"
            write_image(root / "images" / name, h, w, 40 * f + 10 * v)
            rel = Path(name).with_suffix(".png")
            car = [2 + f, 4, 12 + f, 14]
            ped = [20, 2, 26, 20]
            nodes = [
                {"location": [21.0 + (j % 5), 3.0 + j], "category": joint,
                 "visibility": "V" if j % 3 else "N"}
                for j, joint in enumerate(POSE_JOINTS)
            ]  # fmt: skip
            labels.append({
                "name": name, "videoName": video, "frameIndex": f,
                "attributes": {"weather": "rainy", "scene": "highway", "timeofday": "night"},
                "labels": [
                    {"id": "1", "category": "car", "attributes": {"occluded": False},
                     "box2d": dict(zip(("x1", "y1", "x2", "y2"), car, strict=True))},
                    {"id": "2", "category": "pedestrian", "attributes": {"crowd": False},
                     "box2d": dict(zip(("x1", "y1", "x2", "y2"), ped, strict=True)),
                     "graph": {"nodes": nodes, "edges": [], "type": "Pose2D-18Joints_Pred"}},
                    {"id": "3", "category": "single white",
                     "attributes": {"laneDirection": "parallel", "laneStyle": "dashed",
                                    "laneCategory": "single white"},
                     "poly2d": [{"vertices": [[5.0, 23.0], [15.0, 10.0]], "types": "LL",
                                 "closed": False}]},
                ],
            })  # fmt: skip
            write_png(root / "masks/semantic" / rel, ((x + f) % 19).astype(np.uint8))
            write_png(root / "masks/drivable" / rel, np.where(y > h // 2, 0, 2).astype(np.uint8))
            lane_cat = np.where(x == 7, 6, -1)
            write_png(root / "masks/lanes" / rel, encode_lane_byte(lane_cat, 0 * x, 1 + 0 * x))
            category = np.full((h, w), -1)
            ids = np.zeros((h, w), dtype=np.int64)
            category[4:14, car[0] : car[2]] = 2
            ids[4:14, car[0] : car[2]] = 1
            category[2:20, 20:26] = 0
            ids[2:20, 20:26] = 2
            write_png(root / "masks/instance" / rel, encode_instance_rgba(category, ids))
            write_png(root / "masks/edges" / rel, (x == 10).astype(np.uint8))
            write_png(root / "depth" / rel, encode_depth(1.0 + x / 8.0))
            normals = np.zeros((3, h, w))
            normals[1] = -1.0
            write_png(root / "normals" / rel, encode_normals(normals))
            if f < frames - 1:
                flow = np.stack([np.full((h, w), 1.5), np.full((h, w), -0.25)])
                write_png(root / "flow" / rel, encode_flow(flow, np.ones((h, w), bool)))
    (root / "labels.json").write_text(json.dumps(labels))
    return root


@pytest.fixture
def bdd_set():
    """`make_bdd_set(root, videos, frames, h, w)`."""
    return make_bdd_set
