"""Head families: a head module together with its own criterion, chosen by `head.type`.

A task owns its targets, post-processing, metric and visualisation; a head family brings the
network module (`build`), the loss it is trained with (`loss`) and the decoding of its raw
outputs into the form the task post-processes (`decode`). A family serves task *kinds* (dense
maps, image labels, boxes, RoI masks, RoI keypoints), so one task can use a per-pixel decoder or
a set-prediction head by naming it. Register a family with `@HEAD_FAMILIES.register(name)`.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict
from torch import Tensor, nn

from drivemtl.models.features import FeatureSpec
from drivemtl.registry import Registry
from drivemtl.structures.batch import Batch

TaskKind = str  # "dense" | "image" | "boxes" | "roi_masks" | "roi_keypoints" | a new one


class HeadOptions(BaseModel):
    """Base of every head family's options (`model.tasks.<task>.head` in the config)."""

    model_config = ConfigDict(extra="forbid")

    type: str


class HeadFamily:
    """Base class of a head family: module, criterion and decoding for one task.

    `task` is the task plug-in the head serves (its classes, targets, per-task options);
    `options` are the validated head options (the family's `Options` plus the task's extras).
    `needs` / `provides` are the feature streams the head reads beyond the default pixel
    features and the ones it writes (the object stream, for a detector).
    """

    Options: ClassVar[type[HeadOptions]] = HeadOptions
    kinds: ClassVar[tuple[TaskKind, ...]] = ()
    needs: ClassVar[tuple[str, ...]] = ()
    provides: ClassVar[tuple[str, ...]] = ()

    def __init__(self, task: Any, options: Any) -> None:
        self.task = task
        self.options = options

    def build(self, spec: FeatureSpec) -> nn.Module:
        """The head module for features described by `spec`."""
        raise NotImplementedError

    def loss(self, outputs: Any, batch: Batch) -> Tensor:
        """Scalar loss over the samples labelled for the task; an exact zero if none."""
        raise NotImplementedError

    def decode(self, outputs: Any, batch: Batch) -> Any:
        """Raw outputs in the form the task's `predictions` reads (default: unchanged)."""
        return outputs

    def provider_options(self, stream: str) -> dict[str, Any]:
        """Head options for the support task that provides `stream` when no task does."""
        return {}


HEAD_FAMILIES: Registry[type[HeadFamily]] = Registry("head family")


def families_for(kind: TaskKind) -> list[str]:
    """Names of the registered families that serve task kind `kind`."""
    return [n for n in HEAD_FAMILIES.names() if kind in HEAD_FAMILIES.get(n).kinds]
