"""Lane marking from Scalabel JSON: poly2d lane labels turned into BDD100K lane bitmasks.

The official route from poly2d lanes to scores is `bdd100k.label.to_mask` (lane_mark mode) and
then the bitmask evaluation; this module is the first step. Each frame becomes a one-byte map,
255 (background bit set) where no lane is drawn; every label whose category is one of the eight
lane categories is drawn (`lane_raster`: open 1-pt matplotlib strokes, whatever `closed` says)
in file order, later labels on top, with the byte `category + (direction << 5) + (style << 4)`
(`laneDirection` default parallel, `laneStyle` default solid). The canvas size is the config's
`imageSize`, 720 x 1280 without one (the lane_mark default config). Frames are keyed as to_mask
names its PNGs: the base name with ".jpg" replaced by ".png".
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

from drivemtl.evaluation.base import EvaluationInputError
from drivemtl.evaluation.lane_raster import paint_stroke, poly_paths
from drivemtl.structures import bdd
from drivemtl.structures.scalabel import Frame, Label, load_frames

BACKGROUND = 255  # what to_mask fills where no lane is drawn
DEFAULT_SIZE = (720, 1280)  # (height, width) of the bdd100k lane_mark config
NOT_A_LANE = "label category is not a lane category (not drawn, as to_mask does)"


def lane_byte_value(label: Label, frame: str) -> int | None:
    """The lane byte of one label, or None when its category is not a lane category."""
    if label.category not in bdd.LANE_CATEGORIES:
        return None
    attributes = label.attributes or {}
    direction = str(attributes.get("laneDirection", "parallel"))
    style = str(attributes.get("laneStyle", "solid"))
    for name, value, allowed in (
        ("laneDirection", direction, bdd.LANE_DIRECTIONS),
        ("laneStyle", style, bdd.LANE_STYLES),
    ):
        if value not in allowed:
            raise EvaluationInputError(
                f"frame {frame!r} label {label.id!r}: {name} {value!r} is not one of"
                f" {', '.join(allowed)}"
            )
    category = bdd.LANE_CATEGORIES.index(label.category)
    direction_bit = bdd.LANE_DIRECTIONS.index(direction) << 5
    return category + direction_bit + (bdd.LANE_STYLES.index(style) << 4)


def rasterise_lane_frame(
    frame: Frame, size: tuple[int, int], notes: Counter[str] | None = None
) -> np.ndarray:
    """[H, W] uint8 lane bitmask of one frame's poly2d lane labels (255 = background).

    `notes` counts labels left out (non-lane categories).
    """
    height, width = size
    drawn = np.zeros((height, width), np.int32)  # id read back per pixel, 0 = none
    values: list[int] = []
    for label in frame.labels or []:
        value = lane_byte_value(label, frame.name)
        if value is None:
            if notes is not None and label.poly2d:
                notes[NOT_A_LANE] += 1
            continue
        if label.poly2d is None:
            continue
        values.append(value)
        code = _drawn_code(len(values))
        for poly in label.poly2d:
            try:
                paths = poly_paths(poly.vertices, poly.types, (height, width))
            except EvaluationInputError as exc:
                raise EvaluationInputError(
                    f"frame {frame.name!r} label {label.id!r}: {exc}"
                ) from exc
            paint_stroke(drawn, paths, code)
    out = np.full((height, width), BACKGROUND, np.uint8)
    for index, value in enumerate(values):
        out[drawn == index + 1] = value
    return out


def _drawn_code(number: int) -> int:
    """The id to_mask reads back for its `number`-th label: it writes (n >> 8, n % 255) as R, G.

    It decodes (R << 8) + G, so label 255 reads back as 0 (nothing) and 256 on as other ids;
    reproduced so frames with that many lanes match too.
    """
    return ((number >> 8) << 8) + number % 255


def is_lane_json(path: Path) -> bool:
    """A Scalabel JSON file, or a folder of JSON files without lane PNGs."""
    if path.is_file():
        return path.suffix.lower() == ".json"
    return path.is_dir() and any(path.glob("*.json")) and not any(path.rglob("*.png"))


def mask_name(frame_name: str) -> str:
    """The PNG name to_mask writes for a frame: base name, '.jpg' replaced by '.png'."""
    return Path(frame_name.replace(".jpg", ".png")).name


def lane_frames(path: Path) -> dict[str, Frame]:
    """The frames of a lane JSON file / folder keyed by `mask_name`; fails on duplicates."""
    out: dict[str, Frame] = {}
    for frame in load_frames(path):
        name = mask_name(frame.name)
        if name in out:
            raise EvaluationInputError(
                f"{path}: frames {out[name].name!r} and {frame.name!r} both give lane mask {name!r}"
            )
        out[name] = frame
    return out
