"""Pydantic schema of a DriveMTL run configuration (every section forbids unknown keys)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from drivemtl.data.config import DataConfig
from drivemtl.engine.config import RecipeConfig, TrainConfig


class StrictModel(BaseModel):
    """Base for every config section: unknown keys are errors, values are validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class BackboneConfig(StrictModel):
    """Backbone choice and options (a name from the backbone registry)."""

    name: str = "resnet18"
    width: int = Field(64, gt=0, description="channels of the stem; 64 is the standard ResNet")
    frozen_stages: int = Field(-1, ge=-1, le=4, description="-1: none; k: stem and stages 1..k")
    norm: Literal["bn", "frozen_bn", "gn"] = "bn"
    weights: Path | None = Field(None, description="local checkpoint (.pth/.pt/.safetensors)")


class NeckConfig(StrictModel):
    """Feature pyramid options."""

    name: str = "fpn"
    out_channels: int = Field(256, gt=0)
    norm: Literal["gn", "none"] = "none"


class TaskConfig(StrictModel):
    """One task of the network: its loss weight and task-specific head options."""

    loss_weight: float = Field(1.0, ge=0.0)
    head: dict[str, Any] = Field(default_factory=dict, description="validated by the task itself")


class ModelConfig(StrictModel):
    """The shared network (backbone, neck) and the tasks whose heads sit on it."""

    backbone: BackboneConfig = Field(default_factory=BackboneConfig)
    neck: NeckConfig = Field(default_factory=NeckConfig)
    tasks: dict[str, TaskConfig] = Field(default_factory=dict)


class RunConfig(StrictModel):
    """Root of a DriveMTL configuration file."""

    name: str = "run"
    seed: int = 0
    output_dir: Path = Path("runs")
    model: ModelConfig = Field(default_factory=ModelConfig)
    recipe: RecipeConfig | None = Field(None, description="training stages (`drivemtl train`)")
    train: TrainConfig = Field(default_factory=TrainConfig)
    data: DataConfig | None = Field(None, description="image sets and sampling (`drivemtl.data`)")
