"""The `model:` section of a run config: every stage of the network as `type` + options.

Each part's options are validated by the plug-in its `type` names (see `drivemtl.config.base`):
backbone, neck, adapters on pixel levels, group encoders, interaction blocks, exchange modules,
and the tasks, whose `head` options the task and its head family validate.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, model_validator

from drivemtl.config.base import StrictModel, plugin, plugin_default
from drivemtl.models.adapters import ADAPTERS
from drivemtl.models.backbones import BACKBONES
from drivemtl.models.exchanges import EXCHANGES
from drivemtl.models.groups import GROUP_ENCODERS
from drivemtl.models.interactions import INTERACTIONS
from drivemtl.models.necks import NECKS


class TaskConfig(StrictModel):
    """One task of the network: its loss weight and its head (`type` + options)."""

    loss_weight: float = Field(1.0, ge=0.0)
    head: dict[str, Any] = Field(
        default_factory=dict, description="validated by the task and its head family"
    )


class ModelConfig(StrictModel):
    """The network: shared stages (backbone ... exchanges) and the tasks whose heads sit on it."""

    backbone: plugin(BACKBONES, "resnet18") = Field(  # type: ignore[valid-type]
        default_factory=plugin_default(BACKBONES, "resnet18")
    )
    neck: plugin(NECKS, "fpn") = Field(  # type: ignore[valid-type]
        default_factory=plugin_default(NECKS, "fpn")
    )
    adapters: list[plugin(ADAPTERS)] = Field(default_factory=list)  # type: ignore[valid-type]
    groups: dict[str, plugin(GROUP_ENCODERS)] = Field(  # type: ignore[valid-type]
        default_factory=dict, description="task group -> its shared encoder"
    )
    interactions: list[plugin(INTERACTIONS)] = Field(  # type: ignore[valid-type]
        default_factory=list
    )
    exchanges: list[plugin(EXCHANGES)] = Field(default_factory=list)  # type: ignore[valid-type]
    tasks: dict[str, TaskConfig] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _exchange_tasks_enabled(self) -> ModelConfig:
        for index, exchange in enumerate(self.exchanges):
            unknown = [t for t in getattr(exchange, "tasks", []) if t not in self.tasks]
            if unknown:
                raise ValueError(
                    f"exchanges.{index}: tasks {unknown} are not in model.tasks "
                    f"({sorted(self.tasks)})"
                )
        return self
