"""What every stage of the network graph shares: its build context and its stream declarations.

A stage module reads and writes the feature container (`drivemtl.models.features.Features`) and
declares, by stream name, what it `needs`, `provides` and `modifies`; MultiTaskNet orders stages
from these declarations (a stream's producer, then its modifiers in config order, then its
readers) and runs only those the requested tasks depend on.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

from drivemtl.models.features import FeatureSpec

KINDS: tuple[str, ...] = (
    "backbone", "neck", "adapter", "group", "interaction", "decoder", "exchange", "predictor",
)  # fmt: skip


@dataclass(frozen=True)
class StageContext:
    """What a stage plug-in may size itself by when it is built.

    spec: channels / strides of the streams; task_groups: each enabled task's group;
    task_channels: channels of each task's decoder features (known once the heads exist, for
    exchange modules); name: the stage's own name (e.g. the group a group encoder serves);
    task_classes: each enabled task's class names, for stages that embed them (language
    adapters; empty for a task without classes).
    """

    spec: FeatureSpec
    task_groups: dict[str, str]
    task_channels: dict[str, int] = field(default_factory=dict)
    name: str = ""
    task_classes: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def tasks_of(self, group: str) -> list[str]:
        """Enabled tasks of a task group, in config order."""
        return [t for t, g in self.task_groups.items() if g == group]


class FeatureStage(nn.Module):
    """Base of adapters, group encoders, interaction and exchange blocks (optional to inherit).

    Subclasses set `needs` / `provides` / `modifies` (instance or class attributes) and implement
    `forward(features)`: a group encoder returns its group map, the others update `features`.
    """

    needs: tuple[str, ...] = ()
    provides: tuple[str, ...] = ()
    modifies: tuple[str, ...] = ()


@dataclass(frozen=True)
class Stage:
    """One node of the network graph: its kind, module path and stream declarations."""

    kind: str
    path: str
    needs: tuple[str, ...] = ()
    provides: tuple[str, ...] = ()
    modifies: tuple[str, ...] = ()
    task: str | None = None

    @property
    def prefix(self) -> str:
        """Parameter-name prefix of the stage's module."""
        return f"{self.path}."


def declared(module: object, attribute: str, default: tuple[str, ...] = ()) -> tuple[str, ...]:
    """A module's stream declaration as a tuple (missing attribute: `default`)."""
    return tuple(getattr(module, attribute, default) or ())
