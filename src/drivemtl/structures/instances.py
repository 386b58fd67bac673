"""Per-image object instances: boxes, classes, track ids, masks, keypoints (targets or predictions)."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import torch
from torch import Tensor


@dataclass
class Instances:
    """N objects of one image, in that image's pixel coordinates.

    boxes: [N, 4] float xyxy; classes: [N] int64 (index into the task's class list);
    track_ids: [N] int64 (-1 = none); masks: [N, H, W] bool; keypoints: [N, K, 3] float
    (x, y, v) with v = 0 absent, 1 occluded, 2 visible (for predictions: the joint score);
    scores: [N] float (predictions only); ignore: [N] bool (crowd / ignore regions).
    """

    boxes: Tensor
    classes: Tensor
    track_ids: Tensor | None = None
    masks: Tensor | None = None
    keypoints: Tensor | None = None
    scores: Tensor | None = None
    ignore: Tensor | None = None

    def __post_init__(self) -> None:
        n = self.boxes.shape[0]
        if self.boxes.ndim != 2 or self.boxes.shape[1] != 4:
            raise ValueError(f"Instances.boxes must be [N, 4], got {tuple(self.boxes.shape)}")
        for f in fields(self):
            value = getattr(self, f.name)
            if value is not None and value.shape[0] != n:
                raise ValueError(f"Instances.{f.name} has {value.shape[0]} rows but boxes has {n}")

    @classmethod
    def empty(cls, image_size: tuple[int, int] | None = None, num_joints: int = 0) -> Instances:
        """No instances; with `image_size` an empty [0, H, W] mask tensor is attached."""
        masks = None
        if image_size is not None:
            masks = torch.zeros((0, *image_size), dtype=torch.bool)
        keypoints = torch.zeros((0, num_joints, 3)) if num_joints else None
        return cls(
            boxes=torch.zeros((0, 4)),
            classes=torch.zeros((0,), dtype=torch.int64),
            track_ids=torch.zeros((0,), dtype=torch.int64),
            masks=masks,
            keypoints=keypoints,
        )

    def __len__(self) -> int:
        return int(self.boxes.shape[0])

    def __getitem__(self, index: Tensor | slice | list[int]) -> Instances:
        """Select a subset of instances (boolean mask, index tensor or slice)."""
        kwargs = {}
        for f in fields(self):
            value = getattr(self, f.name)
            kwargs[f.name] = None if value is None else value[index]
        return Instances(**kwargs)

    def to(self, device: torch.device | str) -> Instances:
        """Move every tensor to `device`."""
        kwargs = {}
        for f in fields(self):
            value = getattr(self, f.name)
            kwargs[f.name] = None if value is None else value.to(device)
        return replace(self, **kwargs)

    @staticmethod
    def cat(items: list[Instances]) -> Instances:
        """Concatenate instance lists of the same image (fields present in all are kept)."""
        if not items:
            raise ValueError("Instances.cat needs at least one element")
        kwargs = {}
        for f in fields(Instances):
            values = [getattr(item, f.name) for item in items]
            kwargs[f.name] = None if any(v is None for v in values) else torch.cat(values)
        return Instances(**kwargs)
