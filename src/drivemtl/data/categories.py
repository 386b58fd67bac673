"""Category lists: the official BDD100K `configs/*.toml` files and the names readers may meet.

A label whose category is in the set's class list becomes a target; a known BDD100K name outside it
(e.g. `traffic light` when training 8 classes, `parking` in semantic RLEs) is skipped or painted as
ignore; any other name is an error naming the file and frame.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from drivemtl.structures.bdd import (
    DETECTION_CLASSES_10,
    DRIVABLE_CLASSES,
    IGNORED_MAPPING,
    LANE_CATEGORIES,
    NAME_MAPPING,
    POSE_JOINTS,
    SEMANTIC_CLASSES,
    THING_CLASSES,
)

# BDD100K's full semantic label list minus the 19 train classes (all painted as ignore).
SEMANTIC_IGNORED_NAMES: frozenset[str] = frozenset({
    "unlabeled", "dynamic", "ego vehicle", "ground", "static", "parking", "rail track", "bridge",
    "garage", "guard rail", "tunnel", "banner", "billboard", "lane divider", "parking sign",
    "polegroup", "street light", "traffic cone", "traffic device", "traffic sign frame",
    "caravan", "trailer",
})  # fmt: skip


@dataclass(frozen=True)
class CategoryConfig:
    """A task's class list with the official name folding (`name_mapping`, `ignored_mapping`)."""

    classes: tuple[str, ...]
    name_mapping: dict[str, str] = field(default_factory=dict)
    ignored_mapping: dict[str, str] = field(default_factory=dict)

    def resolve(self, name: str) -> tuple[int | None, bool]:
        """(class index or None if outside the list, is-ignore-region) for a raw category name."""
        ignored = False
        if name in self.ignored_mapping:
            name, ignored = self.ignored_mapping[name], True
        name = self.name_mapping.get(name, name)
        if name in self.classes:
            return self.classes.index(name), ignored
        return None, ignored

    def knows(self, name: str) -> bool:
        """Whether `name` is a BDD100K name at all (in this list, mapped, or another BDD list)."""
        return (
            name in self.classes
            or name in self.name_mapping
            or name in self.ignored_mapping
            or name in KNOWN_BDD_NAMES
        )


KNOWN_BDD_NAMES: frozenset[str] = frozenset(
    {*DETECTION_CLASSES_10, *SEMANTIC_CLASSES, *DRIVABLE_CLASSES, *LANE_CATEGORIES, *POSE_JOINTS}
    | set(NAME_MAPPING) | set(IGNORED_MAPPING) | SEMANTIC_IGNORED_NAMES
    | {"area/alternative", "area/drivable", "area/unknown", "lane/crosswalk", "lane/double other",
       "lane/double white", "lane/double yellow", "lane/road curb", "lane/single other",
       "lane/single white", "lane/single yellow", "drivable area", "lane"}
)  # fmt: skip

BUILTIN_CATEGORIES: dict[str, CategoryConfig] = {
    "det": CategoryConfig(DETECTION_CLASSES_10, dict(NAME_MAPPING), dict(IGNORED_MAPPING)),
    "box_track": CategoryConfig(THING_CLASSES, dict(NAME_MAPPING), dict(IGNORED_MAPPING)),
    "seg_track": CategoryConfig(THING_CLASSES, dict(NAME_MAPPING), dict(IGNORED_MAPPING)),
    "ins_seg": CategoryConfig(THING_CLASSES, dict(NAME_MAPPING), dict(IGNORED_MAPPING)),
    "pose": CategoryConfig(("pedestrian",)),
    "sem_seg": CategoryConfig(SEMANTIC_CLASSES),
    "drivable": CategoryConfig(DRIVABLE_CLASSES),
}


def _leaves(categories: list[dict]) -> list[str]:
    names: list[str] = []
    for category in categories:
        sub = category.get("subcategories")
        names.extend(_leaves(sub) if sub else [category["name"]])
    return names


def load_category_toml(path: str | Path) -> CategoryConfig:
    """Read an official BDD100K / Scalabel category config (`configs/<task>.toml`).

    Both layouts are accepted: categories at the top level or under `[scalabel]`. Leaves of the
    category tree, in file order, are the classes (ids 0..N-1).
    """
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ValueError(f"{path}: cannot read category config: {exc}") from None
    section = data.get("scalabel", data)
    if "categories" not in section:
        raise ValueError(f"{path}: no [[categories]] in category config")
    classes = tuple(_leaves(section["categories"]))
    return CategoryConfig(
        classes=classes,
        name_mapping=dict(data.get("name_mapping", {})),
        ignored_mapping=dict(data.get("ignored_mapping", {})),
    )


def get_categories(spec: str | Path) -> CategoryConfig:
    """A builtin list by name (`det`, `box_track`, `ins_seg`, ...) or an official toml file."""
    if isinstance(spec, str) and spec in BUILTIN_CATEGORIES:
        return BUILTIN_CATEGORIES[spec]
    path = Path(spec)
    if path.suffix != ".toml":
        known = ", ".join(sorted(BUILTIN_CATEGORIES))
        raise ValueError(f"unknown category list {spec!r}: give one of {known} or a .toml path")
    return load_category_toml(path)
