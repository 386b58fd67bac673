"""The Scalabel / BDD100K label format as typed models, with a checked reader and a writer.

Real BDD100K files, the synthetic world's output, pseudo labels and DriveMTL's prediction files all
go through these models. Unknown keys in real files are ignored; `None` fields are left out on write.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator, model_validator

from drivemtl.errors import DriveMTLError
from drivemtl.structures.bdd import POSE_SKELETON

AttributeValue = bool | int | float | str | list[float] | list[str]


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)


class Box2D(_Model):
    """Axis-aligned box in pixels (x1, y1) top-left, (x2, y2) bottom-right."""

    x1: float
    y1: float
    x2: float
    y2: float

    @model_validator(mode="after")
    def _ordered(self) -> Box2D:
        if self.x2 < self.x1 or self.y2 < self.y1:
            raise ValueError(
                f"box has x2 < x1 or y2 < y1: ({self.x1}, {self.y1}, {self.x2}, {self.y2})"
            )
        return self


class Poly2D(_Model):
    """Polygon or polyline; `types` has one letter per vertex ('L' line, 'C' Bezier control)."""

    vertices: list[tuple[float, float]]
    types: str
    closed: bool

    @model_validator(mode="after")
    def _types_match(self) -> Poly2D:
        if len(self.types) != len(self.vertices):
            raise ValueError(
                f"poly2d has {len(self.vertices)} vertices but {len(self.types)} vertex types"
            )
        return self


class RLE(_Model):
    """COCO-style compressed run-length encoding of a mask; size is [height, width]."""

    counts: str
    size: tuple[int, int]


class Node(_Model):
    """A keypoint of a graph (pose joint); visibility 'V' visible, 'N' not visible."""

    location: tuple[float, float]
    category: str
    id: str | None = None
    visibility: str | None = None
    type: str | None = None
    score: float | None = None


class Edge(_Model):
    """A graph edge between two node ids."""

    source: str
    target: str
    type: str | None = None


class Graph(_Model):
    """Nodes and edges, e.g. an 18-joint pose skeleton. `edges` is required (possibly empty), as
    in the official Scalabel schema, so every graph we write loads in `scalabel.label.io.load`."""

    nodes: list[Node]
    edges: list[Edge]
    type: str | None = None


def skeleton_edges(node_ids: dict[int, str]) -> list[Edge]:
    """The BDD100K pose skeleton's edges ("body") between the joints present (joint -> node id)."""
    return [
        Edge(source=node_ids[a], target=node_ids[b], type="body")
        for a, b in POSE_SKELETON
        if a in node_ids and b in node_ids
    ]


class Label(_Model):
    """One annotation of a frame. `id` is the track id in videos."""

    id: str
    index: int | None = None
    category: str | None = None
    attributes: dict[str, AttributeValue] | None = None
    manualShape: bool | None = None
    manualAttributes: bool | None = None
    score: float | None = None
    box2d: Box2D | None = None
    poly2d: list[Poly2D] | None = None
    rle: RLE | None = None
    graph: Graph | None = None

    @field_validator("id", mode="before")
    @classmethod
    def _id_as_text(cls, value: Any) -> Any:
        return str(value) if isinstance(value, int) else value


class ImageSize(_Model):
    """Image size of a frame."""

    width: int
    height: int


class Frame(_Model):
    """One image or video frame with its labels and frame-level attributes (tags)."""

    name: str
    videoName: str | None = None
    frameIndex: int | None = None
    url: str | None = None
    timestamp: int | None = None
    attributes: dict[str, AttributeValue] | None = None
    size: ImageSize | None = None
    labels: list[Label] | None = None


class ScalabelFormatError(DriveMTLError):
    """A label file that does not follow the Scalabel format; the message names file and frame."""


def _frame_name(raw: Any, index: int) -> str:
    if isinstance(raw, dict) and isinstance(raw.get("name"), str):
        return raw["name"]
    return f"#{index}"


def _explain(path: Path, raw: Any, index: int, exc: ValidationError) -> str:
    err = exc.errors()[0]
    loc = list(err["loc"])
    where = ".".join(str(p) for p in loc)
    label_id = ""
    if len(loc) >= 2 and loc[0] == "labels" and isinstance(loc[1], int):
        try:
            label_id = f", label id {raw['labels'][loc[1]].get('id')!r}"
        except (KeyError, IndexError, TypeError, AttributeError):
            label_id = ""
    extra = "" if len(exc.errors()) == 1 else f" (and {len(exc.errors()) - 1} more problems)"
    return (
        f"{path}: frame {_frame_name(raw, index)!r}{label_id}: {where}: {err['msg']}"
        f" (got {err.get('input')!r:.80}){extra}"
    )


def parse_frames(raw: Any, path: Path) -> list[Frame]:
    """Validate decoded JSON (a list of frames, one frame, or `{"frames": [...]}`) into Frames."""
    if isinstance(raw, dict) and "frames" in raw:
        raw = raw["frames"]
    elif isinstance(raw, dict):
        raw = [raw]
    if not isinstance(raw, list):
        raise ScalabelFormatError(
            f"{path}: expected a list of frames or {{'frames': [...]}}, got {type(raw).__name__}"
        )
    frames = []
    for index, item in enumerate(raw):
        try:
            frames.append(Frame.model_validate(item))
        except ValidationError as exc:
            raise ScalabelFormatError(_explain(path, item, index, exc)) from None
    return frames


def load_frames(path: str | Path) -> list[Frame]:
    """Read a Scalabel JSON file, or every `*.json` in a folder (one file per video), in order."""
    path = Path(path)
    if path.is_dir():
        files = sorted(path.glob("*.json"))
        if not files:
            raise ScalabelFormatError(f"{path}: folder holds no *.json label files")
        return [frame for file in files for frame in load_frames(file)]
    if not path.is_file():
        raise ScalabelFormatError(f"{path}: label file not found")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ScalabelFormatError(f"{path}: malformed JSON: {exc}") from None
    return parse_frames(raw, path)


def frames_to_json(frames: list[Frame]) -> list[dict[str, Any]]:
    """Frames as plain JSON data, leaving out unset (None) fields like the official tools."""
    return [frame.model_dump(mode="json", exclude_none=True) for frame in frames]


def save_frames(frames: list[Frame], path: str | Path) -> None:
    """Write frames as a Scalabel JSON list, atomically (temp file then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(frames_to_json(frames), separators=(",", ":")), encoding="utf-8")
    tmp.replace(path)
