"""The task plug-in interface and the `TASKS` registry.

A task names its group and kind, its targets, how its decoded head outputs become typed
predictions in original-image coordinates, and its metric. The `Sample` fields its labelled
frames carry are declared by name with `drivemtl.structures.fields.declare_task` (kind, channels,
dtype, ignore value, transform rules, reader path and codec), from which collate, transforms,
readers and writers work. Its head comes from a head family (`drivemtl.tasks.families`) chosen by
`model.tasks.<task>.head.type`, which brings the module and the criterion. Adding a task is one
module plus its registry entries.
"""

from __future__ import annotations

from functools import cache
from typing import Any, ClassVar, Literal

import torch
from pydantic import BaseModel, ValidationError, create_model
from torch import Tensor, nn

from drivemtl.config.loader import ConfigError
from drivemtl.models.config import TaskConfig
from drivemtl.models.features import FeatureSpec
from drivemtl.registry import Registry
from drivemtl.structures.batch import Batch
from drivemtl.structures.fields import TASK_FIELDS, DataField, task_fields
from drivemtl.structures.predictions import FramePrediction
from drivemtl.tasks.families.base import (
    HEAD_FAMILIES,
    HeadFamily,
    HeadOptions,
    TaskKind,
    families_for,
)

TaskGroup = Literal["classification", "segmentation", "localization", "association", "geometry"]


@cache
def head_options_class(family: type[HeadFamily], extras: type[BaseModel] | None) -> type:
    """The options model of a family for a task: the family's options plus the task's extras."""
    if extras is None:
        return family.Options
    name = f"{extras.__name__}{family.__name__}"
    model = create_model(name, __base__=(extras, family.Options), __module__=__name__)
    globals()[name] = model
    return model


def __getattr__(name: str) -> type:
    """The combined options model `name` (extras + family) for unpickling in a fresh process
    (e.g. a spawned DDP rank): built from the registries on first lookup."""
    import drivemtl.tasks  # noqa: F401  (every shipped task and family registered)

    for task_name in TASKS.names():
        extras = TASKS.get(task_name).Extras
        for family_name in HEAD_FAMILIES.names():
            family = HEAD_FAMILIES.get(family_name)
            if extras is not None and f"{extras.__name__}{family.__name__}" == name:
                return head_options_class(family, extras)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class Task:
    """Base class of a task plug-in; subclasses set the class attributes and `predictions`.

    name / group / kind / metric describe the task (its data fields are declared under its name,
    `data_fields`); `default_head` is the head family
    used when the config names none; `Extras` is the pydantic model of task-specific head options
    (class lists, decoding thresholds) validated together with the family's own options.
    `requires` names tasks that must be enabled with this one (their predictions are its input):
    the model refuses a config without them, runs them whenever this task is requested, and runs
    their `update_state` before this task's.
    """

    name: ClassVar[str]
    group: ClassVar[TaskGroup]
    kind: ClassVar[TaskKind]
    metric: ClassVar[str]
    default_head: ClassVar[str]
    Extras: ClassVar[type[BaseModel] | None] = None
    requires: ClassVar[tuple[str, ...]] = ()

    def __init__(self, config: TaskConfig | None = None) -> None:
        if self.name not in TASK_FIELDS:
            raise ConfigError(
                f"task {self.name!r} declares no data fields: call "
                f"drivemtl.structures.fields.declare_task({self.name!r}, ...) in its module"
            )
        config = config if config is not None else TaskConfig()
        self.loss_weight = float(config.loss_weight)
        head = dict(config.head)
        family = self._family_class(head.get("type", self.default_head))
        try:
            self.options: Any = head_options_class(family, self.Extras).model_validate(
                {**head, "type": head.get("type", self.default_head)}
            )
        except ValidationError as exc:
            problems = "; ".join(
                f"model.tasks.{self.name}.head.{'.'.join(str(p) for p in err['loc'])}: {err['msg']}"
                for err in exc.errors()
            )
            raise ConfigError(f"invalid head options for task {self.name!r}: {problems}") from None
        self.family: HeadFamily = family(self, self.options)

    def _family_class(self, name: str) -> type[HeadFamily]:
        known = families_for(self.kind)
        if name not in HEAD_FAMILIES or self.kind not in HEAD_FAMILIES.get(name).kinds:
            raise ConfigError(
                f"model.tasks.{self.name}.head.type: unknown head family {name!r} for a task "
                f"of kind {self.kind!r}; known: {', '.join(known) or '(none registered)'}"
            )
        return HEAD_FAMILIES.get(name)

    @property
    def data_fields(self) -> tuple[DataField, ...]:
        """The declared data fields of this task's labelled samples."""
        return task_fields(self.name)

    @property
    def needs(self) -> tuple[str, ...]:
        """Feature streams the head reads beyond pixel features (e.g. the object stream)."""
        return self.family.needs

    @property
    def provides(self) -> tuple[str, ...]:
        """Feature streams the head writes (the detector provides the object stream)."""
        return self.family.provides

    def provider_config(self, stream: str) -> TaskConfig:
        """Config of the support task built to provide `stream` when no enabled task does."""
        return TaskConfig(head=dict(self.family.provider_options(stream)))

    def build_head(self, spec: FeatureSpec) -> nn.Module:
        """Create this task's head (the family's module) for features described by `spec`."""
        return self.family.build(spec)

    def loss(self, outputs: Any, batch: Batch) -> Tensor:
        """The head family's criterion over the samples labelled for this task."""
        return self.family.loss(outputs, batch)

    def postprocess(self, outputs: Any, batch: Batch) -> list[FramePrediction]:
        """One FramePrediction per sample with this task's fields set, in original coordinates."""
        return self.predictions(self.family.decode(outputs, batch), batch)

    def predictions(self, outputs: Any, batch: Batch) -> list[FramePrediction]:
        """Typed predictions from the family's decoded outputs (implemented by each task)."""
        raise NotImplementedError

    def update_state(
        self, predictions: list[FramePrediction], outputs: Any, batch: Batch, states: list[dict]
    ) -> None:
        """Carry what the task remembers between frames (a tracker's memory) in `states[i]`, the
        task's dict for sample i's video, and complete `predictions` with it (e.g. track ids).
        A stateless task (the default) does nothing."""
        return None

    def domain_map(self, outputs: Any, batch: Batch) -> Tensor | None:
        """[B, C, h, w] differentiable map of the raw outputs that an output-level domain
        discriminator sees (unsupervised domain adaptation); None: the task cannot be adapted
        that way (the default)."""
        return None

    def labeled(self, batch: Batch) -> Tensor:
        """[B] bool mask of the samples labelled for this task."""
        return batch.is_labeled(self.name)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, options={self.options!r})"


TASKS: Registry[type[Task]] = Registry("task")
# Stream -> the task whose head provides it, built as a support task when another task needs it.
STREAM_PROVIDERS: Registry[str] = Registry("stream provider")


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


__all__ = [
    "STREAM_PROVIDERS",
    "TASKS",
    "HeadFamily",
    "HeadOptions",
    "Task",
    "TaskGroup",
    "empty_predictions",
    "require_target",
    "zero_loss",
]
