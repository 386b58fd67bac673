"""One image (or video frame) with its metadata and whichever task targets it carries."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from drivemtl.structures.fields import FIELDS, FieldAccess, fields_of_kind
from drivemtl.structures.instances import Instances


@dataclass
class SampleMeta:
    """Where a sample came from and how it was transformed (to map predictions back).

    orig_size and image_size are (H, W). scale is (sy, sx) = current / original after resizing;
    crop is the (y0, x0) offset of a crop in resized coordinates; flipped says a horizontal flip
    was applied.
    """

    name: str
    image_set: str
    orig_size: tuple[int, int]
    image_size: tuple[int, int] | None = None
    video: str | None = None
    frame_index: int | None = None
    image_path: Path | None = None
    scale: tuple[float, float] = (1.0, 1.0)
    crop: tuple[int, int] = (0, 0)
    flipped: bool = False


@dataclass
class LaneLine:
    """One lane marking as a Scalabel poly2d: vertices [P, 2], vertex types ('L' line, 'C' curve).

    category, direction and style are indices into the BDD lists in `structures.bdd`.
    """

    vertices: Tensor
    types: str
    category: int
    direction: int
    style: int
    closed: bool = False


@dataclass
class Sample(FieldAccess):
    """An image with optional targets for every task; `tasks` names the tasks it is labelled for.

    image: [3, H, W] float32 RGB in 0..255 until normalisation. Dense class maps are int64 with
    255 = ignore: semantic [H, W] (19 classes), drivable [H, W] (0 direct, 1 alternative,
    2 background), lanes [3, H, W] (category 0 = background / 1..8, direction 0 / 1..2,
    style 0 / 1..2), edges [H, W] (0 / 1). depth [H, W] metres (0 = invalid); normals [3, H, W]
    unit camera-frame vectors (all-zero = invalid); flow [2, H, W] forward flow in pixels with
    flow_valid [H, W]; tags [3] (weather, scene, timeofday indices, 255 = unknown). `references`
    are the other frames of the clip (video tasks), transformed with the same random draws.
    """

    image: Tensor
    meta: SampleMeta
    tasks: frozenset[str] = frozenset()
    instances: Instances | None = None
    semantic: Tensor | None = None
    drivable: Tensor | None = None
    lanes: Tensor | None = None
    lane_lines: list[LaneLine] | None = None
    depth: Tensor | None = None
    normals: Tensor | None = None
    edges: Tensor | None = None
    flow: Tensor | None = None
    flow_valid: Tensor | None = None
    tags: Tensor | None = None
    extras: dict[str, Any] = field(default_factory=dict)
    references: list[Sample] = field(default_factory=list, repr=False)

    @property
    def reference(self) -> Sample | None:
        """The first reference frame of the clip (None for a frame read alone)."""
        return self.references[0] if self.references else None

    @property
    def clip(self) -> list[Sample]:
        """Every frame of the clip, key first."""
        return [self, *self.references]

    @property
    def size(self) -> tuple[int, int]:
        """(H, W) of the image as it is now."""
        return int(self.image.shape[-2]), int(self.image.shape[-1])

    def check(self) -> None:
        """Raise ValueError naming the frame if a field does not have its declared shape."""
        h, w = self.size
        for spec in fields_of_kind("dense"):
            value = self.get(spec.name)
            if value is not None and tuple(value.shape) != spec.shape(h, w):
                expected = f"expected {spec.shape(h, w)}" if spec.channels else f"image is {(h, w)}"
                raise ValueError(
                    f"frame {self.meta.name}: {spec.name} is {tuple(value.shape)}, {expected}"
                )
        for spec in fields_of_kind("sequence"):
            value = self.get(spec.name)
            if value is not None and tuple(value.shape) != (spec.channels,):
                raise ValueError(
                    f"frame {self.meta.name}: {spec.name} is {tuple(value.shape)}, "
                    f"expected {(spec.channels,)}"
                )
        unknown = sorted(set(self.extras) - set(FIELDS))
        if unknown:
            raise ValueError(f"frame {self.meta.name}: undeclared data field(s) {unknown}")
        if self.instances is not None and self.instances.masks is not None:
            masks = self.instances.masks
            if len(self.instances) and tuple(masks.shape[-2:]) != (h, w):
                raise ValueError(
                    f"frame {self.meta.name}: instance masks are {tuple(masks.shape[-2:])}, "
                    f"image is {(h, w)}"
                )

    def has(self, task: str) -> bool:
        """Whether this sample is labelled for `task`."""
        return task in self.tasks


def empty_tags() -> Tensor:
    """Tag target with every attribute unknown (255)."""
    return torch.full((3,), 255, dtype=torch.int64)
