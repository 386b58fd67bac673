"""Typed description of the data: image sets, their readers and tasks, label settings, transforms.

Lives in the `data:` section of a run config, or in its own YAML file (`load_data_config`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from drivemtl.config.base import StrictModel
from drivemtl.structures.bdd import DRIVABLE_CLASSES, SEMANTIC_CLASSES
from drivemtl.structures.fields import known_tasks

# Class-map fields a set may remap onto another class list, with the classes their readers give.
REMAPPABLE: dict[str, tuple[str, ...]] = {
    "semantic": SEMANTIC_CLASSES,
    "drivable": DRIVABLE_CLASSES,
}


def _check_tasks(tasks: list[str]) -> list[str]:
    """Task names must have declared data fields (built-in, or a plug-in imported before)."""
    known = known_tasks()
    unknown = [t for t in tasks if t not in known]
    if unknown:
        raise ValueError(f"unknown task(s) {unknown}; known: {', '.join(known)}")
    return tasks


class SubsetConfig(StrictModel):
    """Keep part of a set: `frames` frames from `offset` (in the reader's order), or named frames."""

    frames: int | None = Field(None, gt=0)
    offset: int = Field(0, ge=0)
    names_file: Path | None = Field(None, description="text file, one frame name per line")


class ClipConfig(StrictModel):
    """A clip: the key frame plus `length - 1` reference frames of the same video.

    `sampling`: "next" takes the frames after the key (mirrored back from the end of a video);
    "window" draws distinct frames within +-`window` of the key, never the key itself (QDTrack /
    VTDNet use one reference within +-3). A frame outside any video (a still image, or a video
    of one frame) gets copies of itself as references with `still: copy`, so image-only sets can
    train video losses; `still: none` leaves it without references.
    """

    length: int = Field(2, ge=2, description="frames per clip, key included")
    sampling: Literal["next", "window"] = "window"
    window: int = Field(3, ge=1, description="max frame distance of a reference (window)")
    still: Literal["copy", "none"] = "copy"


class ClassRemap(StrictModel):
    """A class-map field onto another class list (e.g. DenseMTL's 8 VKITTI2 / Cityscapes
    classes): `map` gives, for each reader class kept, its class in `classes`; every other class
    becomes ignore (255)."""

    classes: list[str] = Field(min_length=1, max_length=255, description="the new class list")
    map: dict[str, str] = Field(min_length=1, description="reader class -> class of `classes`")

    @model_validator(mode="after")
    def _targets_known(self) -> ClassRemap:
        unknown = sorted({v for v in self.map.values() if v not in self.classes})
        if unknown:
            raise ValueError(f"map targets {unknown} are not in classes {self.classes}")
        if len(set(self.classes)) != len(self.classes):
            raise ValueError(f"classes {self.classes} repeat a name")
        return self

    def table(self, source: tuple[str, ...]) -> list[int]:
        """Lookup table old id -> new id (255 for unmapped ids and for 255 itself)."""
        lut = [255] * 256
        for name, target in self.map.items():
            lut[source.index(name)] = self.classes.index(target)
        return lut


class ImageSetConfig(StrictModel):
    """One image set: a reader over a root folder and the tasks its frames are labelled for.

    `paths` override the reader's default relative paths (keys such as `images`, `labels`,
    `<task>`); every path and the root may contain `{split}`. `categories` names the instance
    class list (a builtin such as `det` / `box_track` or an official BDD100K `.toml`).
    """

    reader: str = "bdd100k"
    root: Path
    tasks: list[str]
    splits: list[str] | None = Field(None, description="splits this set belongs to; None = all")
    paths: dict[str, str] = Field(default_factory=dict)
    categories: str = "det"
    subset: SubsetConfig | None = None
    pseudo_labels: dict[str, Path] = Field(
        default_factory=dict, description="task -> label source replacing the set's own labels"
    )
    clip: ClipConfig | None = Field(
        None, description="read clips: the key frame plus reference frames (video tasks)"
    )
    load_size: tuple[int, int] | None = Field(
        None, description="(H, W) to resize to while reading (intrinsics scaled to match)"
    )
    remap: dict[str, ClassRemap] = Field(
        default_factory=dict,
        description="class-map field (semantic, drivable) -> its classes mapped onto another list",
    )

    _tasks = field_validator("tasks")(_check_tasks)

    @field_validator("remap")
    @classmethod
    def _remappable(cls, remap: dict[str, ClassRemap]) -> dict[str, ClassRemap]:
        for name, spec in remap.items():
            if name not in REMAPPABLE:
                raise ValueError(f"remap: {name!r} cannot be remapped; remappable: "
                                 f"{', '.join(REMAPPABLE)}")  # fmt: skip
            unknown = sorted(k for k in spec.map if k not in REMAPPABLE[name])
            if unknown:
                raise ValueError(f"remap.{name}.map: {unknown} are not {name} classes "
                                 f"({', '.join(REMAPPABLE[name])})")  # fmt: skip
        return remap

    def classes_of(self, name: str) -> tuple[str, ...]:
        """The class list of class-map field `name` as this set gives it (after `remap`)."""
        return tuple(self.remap[name].classes) if name in self.remap else REMAPPABLE[name]


class LabelSelection(StrictModel):
    """One set's part in a label setting: the tasks kept and an optional frame subset."""

    tasks: list[str] | None = None
    subset: SubsetConfig | None = None

    _tasks = field_validator("tasks")(lambda v: v if v is None else _check_tasks(v))


class TransformConfig(StrictModel):
    """Augmentation and normalisation (training) or plain resize + normalisation (evaluation)."""

    heights: list[int] = Field(default_factory=lambda: [360], description="train: random choice")
    test_height: int | None = Field(None, description="eval height; None = first of `heights`")
    max_width: int | None = None
    resize: bool = True
    crop: tuple[int, int] | None = Field(None, description="train random crop (H, W)")
    flip: float = Field(0.5, ge=0.0, le=1.0)
    photometric: bool = False
    normalize: bool = True
    mean: tuple[float, float, float] = (123.675, 116.28, 103.53)
    std: tuple[float, float, float] = (58.395, 57.12, 57.375)


class DataConfig(StrictModel):
    """Every image set of a run, the active label setting, error policy and transforms."""

    sets: dict[str, ImageSetConfig]
    label_settings: dict[str, dict[str, LabelSelection]] = Field(default_factory=dict)
    label_setting: str | None = None
    on_error: Literal["raise", "skip"] = "raise"
    transforms: TransformConfig = Field(default_factory=TransformConfig)
    size_divisor: int = Field(32, gt=0)

    @model_validator(mode="after")
    def _known_names(self) -> DataConfig:
        if self.label_setting is not None and self.label_setting not in self.label_settings:
            known = ", ".join(sorted(self.label_settings)) or "(none defined)"
            raise ValueError(f"label_setting {self.label_setting!r} is not defined; known: {known}")
        for setting, selections in self.label_settings.items():
            for name in selections:
                if name not in self.sets:
                    raise ValueError(f"label_settings.{setting} names unknown image set {name!r}")
        return self


def load_data_config(path: str | Path, overrides: list[str] | None = None) -> DataConfig:
    """Read a dataset YAML (with `_base_` and `--set` overrides) into a DataConfig."""
    from drivemtl.config.loader import load_config

    return load_config(path, DataConfig, overrides or [])


def data_config_from_card(
    directory: str | Path, clip: ClipConfig | dict | None = None, **options: object
) -> DataConfig:
    """A DataConfig over every image set listed in a synthetic dataset's `dataset.yaml` card.

    Video sets get `clip` (None: frames alone); `options` are further DataConfig fields (transforms, on_error ...).
    """
    import yaml

    directory = Path(directory)
    card_path = directory / "dataset.yaml"
    if not card_path.is_file():
        raise FileNotFoundError(f"{card_path}: dataset card not found (not a synthetic dataset?)")
    card = yaml.safe_load(card_path.read_text(encoding="utf-8")) or {}
    if not isinstance(card.get("sets"), dict) or not card["sets"]:
        raise ValueError(f"{card_path}: no `sets` mapping in the dataset card")
    sets = {}
    for name, spec in card["sets"].items():
        set_cfg: dict[str, object] = {"root": str(directory / name), "tasks": list(spec["tasks"])}
        if spec.get("labels"):
            set_cfg["paths"] = {"labels": str(spec["labels"])}
        if spec.get("videos") and clip is not None:
            set_cfg["clip"] = clip.model_dump() if isinstance(clip, ClipConfig) else dict(clip)
        sets[name] = set_cfg
    return DataConfig.model_validate({"sets": sets, **options})
