"""The task plug-in interface and the `TASKS` registry.

A task names the `Sample` fields it needs, builds its head from the shared feature spec, computes
its loss from raw head outputs using only the samples labelled for it, and turns raw outputs into
typed predictions in original-image coordinates. Adding a task is one module plus a registry entry.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from torch import Tensor, nn

from drivemtl.config.loader import ConfigError
from drivemtl.config.schema import TaskConfig
from drivemtl.models.heads.features import FeatureSpec
from drivemtl.registry import Registry
from drivemtl.structures.batch import Batch
from drivemtl.structures.predictions import FramePrediction

TaskGroup = Literal["classification", "segmentation", "localization", "association", "geometry"]


class HeadOptions(BaseModel):
    """Base of every task's head options (`model.tasks.<task>.head` in the config)."""

    model_config = ConfigDict(extra="forbid")

    type: str


class RoIHeadOptions(HeadOptions):
    """Options shared by the heads that run on detector RoIs (instance masks, pose keypoints)."""

    detector: dict[str, Any] = Field(
        default_factory=dict,
        description="detection head options when detection itself is not a task",
    )
    channels: int = Field(256, gt=0)
    num_convs: int = Field(4, ge=0)
    resolution: int = Field(14, gt=0, description="RoIAlign size of the head's input")


class Task:
    """Base class of a task plug-in; subclasses set the class attributes and the four methods.

    name / group / fields / metric describe the task; `Options` is the pydantic model of its head
    options; `requires` lists heads that must run before this task's head (instance and pose
    consume the detection head's proposals).
    """

    name: ClassVar[str]
    group: ClassVar[TaskGroup]
    fields: ClassVar[tuple[str, ...]]
    metric: ClassVar[str]
    Options: ClassVar[type[HeadOptions]] = HeadOptions
    requires: ClassVar[tuple[str, ...]] = ()

    def __init__(self, config: TaskConfig | None = None) -> None:
        config = config if config is not None else TaskConfig()
        self.loss_weight = float(config.loss_weight)
        try:
            self.options: Any = self.Options.model_validate(config.head)
        except ValidationError as exc:
            problems = "; ".join(
                f"model.tasks.{self.name}.head.{'.'.join(str(p) for p in err['loc'])}: {err['msg']}"
                for err in exc.errors()
            )
            raise ConfigError(f"invalid head options for task {self.name!r}: {problems}") from None

    def build_head(self, spec: FeatureSpec) -> nn.Module:
        """Create this task's head for features described by `spec`."""
        raise NotImplementedError

    def loss(self, outputs: Any, batch: Batch) -> Tensor:
        """Scalar loss over the samples with `batch.labeled[self.name]`; exact zero if none."""
        raise NotImplementedError

    def postprocess(self, outputs: Any, batch: Batch) -> list[FramePrediction]:
        """One FramePrediction per sample with this task's fields set, in original coordinates."""
        raise NotImplementedError

    def labeled(self, batch: Batch) -> Tensor:
        """[B] bool mask of the samples labelled for this task."""
        return batch.is_labeled(self.name)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, options={self.options!r})"


TASKS: Registry[type[Task]] = Registry("task")


def zero_loss(device: torch.device) -> Tensor:
    """The loss of a task no sample is labelled for: an exact zero that sends no gradient."""
    return torch.zeros((), device=device)


def require_target(batch: Batch, field: str, task: str) -> Tensor:
    """The dense target `field` of the batch (uint8 class maps widened to int64), or a ValueError
    naming the task and frames."""
    value = getattr(batch, field)
    if value is None:
        names = [m.name for m, lab in zip(batch.metas, batch.is_labeled(task), strict=True) if lab]
        raise ValueError(
            f"task {task!r}: samples {names[:3]} are labelled but the batch has no {field!r} target"
        )
    return value.long() if value.dtype == torch.uint8 else value


def empty_predictions(batch: Batch) -> list[FramePrediction]:
    """One empty FramePrediction per sample (only `meta` set)."""
    return [FramePrediction(meta=meta) for meta in batch.metas]
