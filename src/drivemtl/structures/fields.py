"""Data-field declarations: what each task's targets are and how every layer treats them.

A `DataField` says how one target of a `Sample` is stored (kind, channels, dtype, ignore value),
how transforms change it (resize mode, what a flip does, whether values scale with the image),
where readers find it and how files encode it (`path`, `codec`, `prediction_path`). Collate,
transforms, `Sample.check`, the BDD100K reader, the prediction writers, pseudo-labelling and the
panels of `predict` all work from these declarations, so a new task declares its fields once
(`declare_task`) and nothing else in the core changes.

The built-in tasks' fields are declared here, at the bottom, because the canonical readers
decode them; a plug-in task declares its own in its module.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

import torch

from drivemtl.registry import Registry

FieldKind = Literal["dense", "instances", "lines", "sequence"]
FlipRule = Literal["mirror", "negate_x", "none"]


@dataclass(frozen=True)
class DataField:
    """How one target field is stored, batched, transformed, read and written.

    kind: `dense` maps ([H, W] when channels == 0, else [C, H, W]), `instances` (an `Instances`
    per sample), `lines` (a list of `LaneLine` per sample), `sequence` (a [channels] vector per
    frame, e.g. tags). dtype and ignore are the batch dtype and the value of padding, missing
    and unlabelled entries. resize: interpolation of dense maps; scale_with_size: channels
    (x, y) are pixel vectors multiplied by the resize factors (flow); flip: `mirror` the map,
    `negate_x` mirror and negate channel 0 (vectors such as normals and flow), `none`.
    codec: the PNG codec (in `drivemtl.data.field_codecs`) readers decode and writers encode
    with; path: the default folder, relative to an image set's root, of its `<frame>.png`
    files; prediction_path: where prediction writers put it (None: not written); classes:
    number of classes of a class map (ids >= classes read as ignore); visual: how `predict`
    panels draw it (`classes`, `scalar`, `vector`, or None); pseudo_labels: the task's
    prediction of the field is in the target's encoding, so a teacher's prediction can be
    written as a pseudo label (class maps are thresholded by `<field>_confidence`).
    """

    name: str
    kind: FieldKind = "dense"
    channels: int = 0
    dtype: torch.dtype = torch.uint8
    ignore: float = 255
    resize: Literal["nearest", "bilinear"] = "nearest"
    scale_with_size: bool = False
    flip: FlipRule = "mirror"
    codec: str | None = None
    path: str | None = None
    prediction_path: str | None = None
    classes: int | None = None
    visual: Literal["classes", "scalar", "vector"] | None = None
    pseudo_labels: bool = False

    def __post_init__(self) -> None:
        if self.kind not in ("dense", "instances", "lines", "sequence"):
            raise ValueError(f"data field {self.name!r}: unknown kind {self.kind!r}")
        if self.channels < 0:
            raise ValueError(f"data field {self.name!r}: channels must be >= 0")
        if self.flip == "negate_x" and self.channels < 1:
            raise ValueError(f"data field {self.name!r}: negate_x needs a vector field (channels)")
        if self.scale_with_size and self.channels != 2:
            raise ValueError(f"data field {self.name!r}: scale_with_size needs 2 channels (x, y)")

    @property
    def is_dense(self) -> bool:
        """Whether the field is a per-pixel map (padded, cropped, resized with the image)."""
        return self.kind == "dense"

    def shape(self, height: int, width: int) -> tuple[int, ...]:
        """The expected shape of one sample's dense map at (height, width)."""
        return (self.channels, height, width) if self.channels else (height, width)


# Field name -> declaration; task name -> the names of the fields its labelled samples carry.
FIELDS: Registry[DataField] = Registry("data field")
TASK_FIELDS: Registry[tuple[str, ...]] = Registry("task data")


def declare_task(task: str, *fields: DataField | str) -> None:
    """Declare that samples labelled for `task` carry `fields` (new declarations or the names of
    declared ones). Declaring the same task again with the same fields is a no-op."""
    names = []
    for item in fields:
        if isinstance(item, DataField):
            if item.name not in FIELDS or FIELDS.get(item.name) != item:
                FIELDS.add(item.name, item)
            names.append(item.name)
        else:
            FIELDS.get(item)
            names.append(item)
    if task in TASK_FIELDS and TASK_FIELDS.get(task) == tuple(names):
        return
    TASK_FIELDS.add(task, tuple(names))


def task_fields(task: str) -> tuple[DataField, ...]:
    """The declared fields of `task` (KeyError listing the known tasks when undeclared)."""
    return tuple(FIELDS.get(name) for name in TASK_FIELDS.get(task))


def pseudo_mask_field(task: str) -> DataField | None:
    """The dense field a teacher's prediction of `task` is written to as a pseudo-label PNG
    (None when the task has no such field: one dense field with a codec and `pseudo_labels`)."""
    if task not in TASK_FIELDS:
        return None
    dense = [f for f in task_fields(task) if f.is_dense]
    others = [f for f in task_fields(task) if not f.is_dense]
    if len(dense) == 1 and not others and dense[0].pseudo_labels and dense[0].codec:
        return dense[0]
    return None


def known_tasks() -> list[str]:
    """Every task name with declared data fields (built-in and plug-in)."""
    return TASK_FIELDS.names()


def fields_of_kind(kind: FieldKind) -> list[DataField]:
    """Every declared field of `kind`, in declaration order."""
    return [field for field in FIELDS.entries().values() if field.kind == kind]


# ------------------------------------------------------------------------ the built-in fields
# Class maps travel as uint8 (ids < 255, 255 = ignore): 8x less to copy from loader workers than
# int64; losses widen them on the device (`tasks.base.require_target`).
_BUILTIN = {
    "tagging": (DataField("tags", kind="sequence", channels=3, dtype=torch.int64),),
    "semantic": (
        DataField(
            "semantic", codec="class_map", classes=19, path="masks/semantic",
            prediction_path="masks/sem_seg", visual="classes", pseudo_labels=True,
        ),
    ),
    "drivable": (
        DataField(
            "drivable", codec="class_map", classes=3, path="masks/drivable",
            prediction_path="masks/drivable", visual="classes", pseudo_labels=True,
        ),
    ),
    "lanes": (
        DataField(
            "lanes", channels=3, codec="lane_byte", path="masks/lanes",
            prediction_path="masks/lane", visual="classes",
        ),
        DataField("lane_lines", kind="lines"),
    ),
    "detection": (DataField("instances", kind="instances"),),
    "edges": (
        DataField("edges", codec="class_map", classes=2, path="masks/edges", visual="scalar"),
    ),
    "depth": (
        DataField(
            "depth", dtype=torch.float32, ignore=0.0, codec="depth16", path="depth",
            prediction_path="depth", visual="scalar",
        ),
    ),
    "normals": (
        DataField(
            "normals", channels=3, dtype=torch.float32, ignore=0.0, flip="negate_x",
            codec="normals16", path="normals", prediction_path="normals", visual="vector",
        ),
    ),
    "flow": (
        DataField(
            "flow", channels=2, dtype=torch.float32, ignore=0.0, flip="negate_x",
            scale_with_size=True, path="flow", visual="vector",
        ),
        DataField("flow_valid", dtype=torch.bool, ignore=False),
    ),
}  # fmt: skip
for _task, _fields in _BUILTIN.items():
    declare_task(_task, *_fields)
for _task in ("instance", "pose", "mot", "mots"):
    declare_task(_task, "instances")


class FieldAccess:
    """Mixin of the containers (`Sample`, `Batch`, `FramePrediction`) that hold target fields.

    Built-in fields are typed dataclass attributes; a plug-in task's fields live in `extras` and
    read and write like attributes (`sample.heat`, `sample.heat = map`), None when absent. Generic
    code uses `get(name)` / `set(name, value)`.
    """

    extras: dict

    @classmethod
    def _attributes(cls) -> frozenset[str]:
        cached = cls.__dict__.get("_attribute_cache")
        if cached is None:
            cached = frozenset(f.name for f in dataclasses.fields(cls))  # type: ignore[arg-type]
            cls._attribute_cache = cached  # type: ignore[attr-defined]
        return cached

    def get(self, name: str) -> Any:
        """The value of field `name` (None when the container does not carry it)."""
        if name in self._attributes():
            return getattr(self, name)
        return self.extras.get(name)

    def set(self, name: str, value: Any) -> None:
        """Set field `name` (a plug-in field goes into `extras`; None removes it there)."""
        if name in self._attributes():
            object.__setattr__(self, name, value)
        elif value is None:
            self.extras.pop(name, None)
        else:
            self.extras[name] = value

    def __getattr__(self, name: str) -> Any:
        # Only reached when normal lookup fails: a declared plug-in field reads from `extras`.
        if name in FIELDS and not name.startswith("_"):
            return self.__dict__.get("extras", {}).get(name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __setattr__(self, name: str, value: Any) -> None:
        if name not in self._attributes() and name in FIELDS:
            self.set(name, value)
        else:
            object.__setattr__(self, name, value)
