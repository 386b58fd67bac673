"""Look at a written dataset: a mosaic of one frame with every label, and per-set statistics.

Reads the files back with the same codecs the writers use, so what it shows is what is on disk.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import yaml

from drivemtl.data.png_codecs import (
    decode_depth,
    decode_flow,
    decode_instance_rgba,
    decode_normals,
    read_png_unchanged,
)
from drivemtl.structures.bdd import POSE_SKELETON
from drivemtl.structures.palette import DRIVABLE_PALETTE, SEMANTIC_PALETTE
from drivemtl.structures.scalabel import Frame, load_frames

DRIVABLE_COLOURS = np.vstack([DRIVABLE_PALETTE, np.zeros((1, 3), dtype=np.uint8)])  # + background


class DatasetError(ValueError):
    """A dataset folder that is missing its card, a set or a frame; the message names it."""


def read_card(root: str | Path) -> dict[str, Any]:
    """The `dataset.yaml` card of a dataset folder."""
    card = Path(root) / "dataset.yaml"
    if not card.is_file():
        raise DatasetError(
            f"{root}: no dataset.yaml (not a dataset written by `drivemtl data synth`)"
        )
    data = yaml.safe_load(card.read_text(encoding="utf-8"))
    if not isinstance(data, dict) or not isinstance(data.get("sets"), dict):
        raise DatasetError(f"{card}: expected a mapping with a `sets` mapping")
    return data


def _colour_ids(ids: np.ndarray) -> np.ndarray:
    rng = np.random.default_rng(0)
    table = rng.integers(60, 255, size=(int(ids.max(initial=0)) + 1, 3)).astype(np.uint8)
    table[0] = 0
    return table[ids]


def _flow_colour(flow: np.ndarray, valid: np.ndarray) -> np.ndarray:
    mag, ang = cv2.cartToPolar(flow[0], flow[1])
    hsv = np.zeros((*flow.shape[1:], 3), np.uint8)
    hsv[..., 0] = (ang * 90 / np.pi).astype(np.uint8)
    hsv[..., 1] = 255
    hsv[..., 2] = np.clip(mag / max(float(mag[valid].max(initial=1.0)), 1e-3) * 255, 0, 255).astype(
        np.uint8
    )
    rgb = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
    rgb[~valid] = 0
    return rgb


def _annotate(image: np.ndarray, frame: Frame) -> np.ndarray:
    out = image.copy()
    for label in frame.labels or []:
        if label.box2d is not None:
            b = label.box2d
            cv2.rectangle(out, (int(b.x1), int(b.y1)), (int(b.x2), int(b.y2)), (255, 255, 0), 1)
        for poly in label.poly2d or []:
            pts = np.rint(np.asarray(poly.vertices)).astype(np.int32)
            cv2.polylines(out, [pts], poly.closed, (0, 255, 0), 1)
        if label.graph is not None:
            nodes = label.graph.nodes
            for a, b in POSE_SKELETON:
                if (
                    a < len(nodes)
                    and b < len(nodes)
                    and nodes[a].visibility == nodes[b].visibility == "V"
                ):
                    pa = tuple(int(round(v)) for v in nodes[a].location)
                    pb = tuple(int(round(v)) for v in nodes[b].location)
                    cv2.line(out, pa, pb, (255, 0, 255), 1)
    return out


def _caption(tile: np.ndarray, text: str) -> np.ndarray:
    tile = np.ascontiguousarray(tile)
    scale = max(0.3, tile.shape[1] / 900)
    cv2.putText(
        tile,
        text,
        (3, int(14 * scale / 0.4)),
        cv2.FONT_HERSHEY_SIMPLEX,
        scale,
        (255, 255, 255),
        1,
        cv2.LINE_AA,
    )
    return tile


def frame_mosaic(root: str | Path, frame_name: str | None = None) -> np.ndarray:
    """RGB mosaic of one frame: image with boxes / lanes / poses, then every label map on disk."""
    root = Path(root)
    card = read_card(root)
    chosen: tuple[str, Frame] | None = None
    for set_name in card["sets"]:
        frames = load_frames(root / set_name / "labels.json")
        for frame in frames:
            if (
                frame_name is None
                or frame.name == frame_name
                or Path(frame.name).stem == frame_name
            ):
                chosen = (set_name, frame)
                break
        if chosen:
            break
    if chosen is None:
        raise DatasetError(f"{root}: no frame named {frame_name!r} in any set")
    set_name, frame = chosen
    base = root / set_name
    stem = str(Path(frame.name).with_suffix(".png"))
    image = cv2.cvtColor(cv2.imread(str(base / "images" / frame.name)), cv2.COLOR_BGR2RGB)
    tags = frame.attributes or {}
    title = f"{set_name}/{frame.name}" + (
        " " + ", ".join(str(v) for v in tags.values()) if tags else ""
    )
    tiles = [_caption(_annotate(image, frame), title)]
    paths = {
        "semantic": base / "masks" / "semantic" / stem, "drivable": base / "masks" / "drivable" / stem,
        "lanes": base / "masks" / "lanes" / stem, "instance": base / "masks" / "instance" / stem,
        "edges": base / "masks" / "edges" / stem, "depth": base / "depth" / stem,
        "normals": base / "normals" / stem, "flow": base / "flow" / stem,
    }  # fmt: skip
    for name, path in paths.items():
        if not path.is_file():
            continue
        data = read_png_unchanged(path)
        if name == "semantic":
            tile = np.where((data < 19)[..., None], SEMANTIC_PALETTE[np.minimum(data, 18)], 255)
        elif name == "drivable":
            tile = DRIVABLE_COLOURS[np.minimum(data, 2)]
        elif name == "lanes":
            tile = np.where(
                (data == 255)[..., None], 0, _colour_ids((data & 7).astype(np.int64) + 1)
            )
        elif name == "instance":
            _, ids, _ = decode_instance_rgba(data)
            tile = _colour_ids(ids)
        elif name == "edges":
            tile = np.repeat((data * 255)[..., None], 3, axis=2)
        elif name == "depth":
            depth = decode_depth(data)
            inv = np.where(depth > 0, 1.0 / np.maximum(depth, 1e-3), 0)
            norm = (np.clip(inv / max(float(inv.max()), 1e-6), 0, 1) * 255).astype(np.uint8)
            tile = cv2.cvtColor(cv2.applyColorMap(norm, cv2.COLORMAP_MAGMA), cv2.COLOR_BGR2RGB)
        elif name == "normals":
            n = decode_normals(data)
            tile = ((n.transpose(1, 2, 0) + 1) * 127.5).astype(np.uint8)
        else:
            flow, valid = decode_flow(data)
            tile = _flow_colour(flow, valid)
        tiles.append(_caption(tile.astype(np.uint8), name))
    cols = 3
    h, w = image.shape[:2]
    while len(tiles) % cols:
        tiles.append(np.zeros((h, w, 3), np.uint8))
    rows = [np.concatenate(tiles[i : i + cols], axis=1) for i in range(0, len(tiles), cols)]
    return np.concatenate(rows, axis=0)


@dataclass
class SetStats:
    """Frames, videos, tasks and label counts of one image set."""

    name: str
    tasks: list[str]
    frames: int
    videos: int
    files: dict[str, int] = field(default_factory=dict)
    labels: Counter[str] = field(default_factory=Counter)


def dataset_stats(root: str | Path) -> list[SetStats]:
    """Count frames, label files and labels (boxes per class, poses, lanes, tags) per set."""
    root = Path(root)
    card = read_card(root)
    out = []
    for set_name, spec in card["sets"].items():
        frames = load_frames(root / set_name / "labels.json")
        stats = SetStats(
            set_name,
            list(spec.get("tasks", [])),
            len(frames),
            len({f.videoName for f in frames if f.videoName}),
        )
        for folder in (
            "images",
            "masks/semantic",
            "masks/drivable",
            "masks/lanes",
            "masks/instance",
            "masks/edges",
            "depth",
            "normals",
            "flow",
        ):
            path = root / set_name / folder
            if path.is_dir():
                stats.files[folder] = sum(1 for p in path.rglob("*") if p.is_file())
        for frame in frames:
            if frame.attributes:
                stats.labels["tagged frames"] += 1
            for label in frame.labels or []:
                if label.box2d is not None:
                    stats.labels[f"box {label.category}"] += 1
                if label.graph is not None:
                    stats.labels["pose"] += 1
                if label.poly2d:
                    stats.labels["lane lines"] += 1
        out.append(stats)
    return out
