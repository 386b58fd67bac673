"""Category / size / sigma definitions read from Scalabel or BDD100K config TOML files.

A BDD100K toolkit config wraps the Scalabel one under `[scalabel]` and adds `name_mapping`
(raw names folded into canonical ones) and `ignored_mapping` (names that become ignore regions of
a class); both layouts are accepted. Without a file the BDD100K defaults of `structures.bdd` apply.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from drivemtl.evaluation.base import EvaluationInputError
from drivemtl.structures import bdd
from drivemtl.structures.scalabel import Frame, Label


@dataclass
class LabelConfig:
    """Leaf categories (in id order), their parent groups, image size, pose sigmas, mappings."""

    categories: list[str]
    super_categories: dict[str, list[str]] = field(default_factory=dict)
    image_size: tuple[int, int] | None = None  # (height, width)
    pose_sigmas: list[float] | None = None
    name_mapping: dict[str, str] = field(default_factory=dict)
    ignored_mapping: dict[str, str] = field(default_factory=dict)
    remove_ignored: bool = False

    def map_frames(self, frames: list[Frame]) -> list[Frame]:
        """Apply name / ignored mappings as the BDD100K toolkit does (returns new frames)."""
        if not self.name_mapping and not self.ignored_mapping:
            return frames
        out = []
        for frame in frames:
            labels = []
            for label in frame.labels or []:
                mapped = self._map_label(label)
                if mapped is not None:
                    labels.append(mapped)
            out.append(frame.model_copy(update={"labels": labels}))
        return out

    def _map_label(self, label: Label) -> Label | None:
        category = self.name_mapping.get(label.category or "", label.category)
        attributes = dict(label.attributes or {})
        if category in self.ignored_mapping:
            if self.remove_ignored:
                return None
            category = self.ignored_mapping[category]
            attributes["ignored"] = True
        return label.model_copy(update={"category": category, "attributes": attributes})


def _leaves(nodes: list[dict[str, Any]], groups: dict[str, list[str]]) -> list[str]:
    names: list[str] = []
    for node in nodes:
        if "name" not in node:
            raise ValueError(f"category entry without a name: {node}")
        subs = node.get("subcategories")
        if subs:
            leaves = _leaves(subs, groups)
            groups[node["name"]] = leaves
            names.extend(leaves)
        else:
            names.append(node["name"])
    return names


def load_label_config(path: str | Path) -> LabelConfig:
    """Read a Scalabel config TOML (or a BDD100K one with a `[scalabel]` section)."""
    path = Path(path)
    if not path.is_file():
        raise EvaluationInputError(f"{path}: config file not found")
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise EvaluationInputError(f"{path}: malformed TOML: {exc}") from None
    body = raw.get("scalabel", raw)
    if "categories" not in body:
        raise EvaluationInputError(f"{path}: no [[categories]] defined")
    groups: dict[str, list[str]] = {}
    try:
        categories = _leaves(body["categories"], groups)
    except ValueError as exc:
        raise EvaluationInputError(f"{path}: {exc}") from None
    size = body.get("imageSize") or body.get("image_size")
    return LabelConfig(
        categories=categories,
        super_categories=groups,
        image_size=(int(size["height"]), int(size["width"])) if size else None,
        pose_sigmas=body.get("poseSigmas") or body.get("pose_sigmas"),
        name_mapping=dict(raw.get("name_mapping", {})),
        ignored_mapping=dict(raw.get("ignored_mapping", {})),
        remove_ignored=bool(raw.get("remove_ignored", False)),
    )


def default_config(task: str) -> LabelConfig:
    """The BDD100K definitions for `task` (det, ins_seg, box_track, seg_track, pose, sem_seg...)."""
    size = (720, 1280)
    mappings = {
        "name_mapping": dict(bdd.NAME_MAPPING),
        "ignored_mapping": dict(bdd.IGNORED_MAPPING),
    }
    supers = {k: list(v) for k, v in bdd.SUPER_CATEGORIES.items()}
    if task == "det":
        return LabelConfig(list(bdd.DETECTION_CLASSES_10), supers, size, **mappings)
    if task in ("ins_seg", "box_track", "seg_track"):
        return LabelConfig(list(bdd.THING_CLASSES), supers, size, **mappings)
    if task == "pose":
        return LabelConfig(["pedestrian"], {}, size, pose_sigmas=list(bdd.POSE_SIGMAS))
    if task == "sem_seg":
        return LabelConfig(list(bdd.SEMANTIC_CLASSES), {}, size)
    if task == "drivable":
        return LabelConfig(list(bdd.DRIVABLE_CLASSES), {}, size)
    raise KeyError(f"no default label config for task {task!r}")
