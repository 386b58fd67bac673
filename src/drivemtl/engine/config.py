"""Pydantic schemas of training recipes: stages, optimisers, schedules, loss weighting, run options.

A recipe is an ordered list of stages; each stage says which tasks and image sets it trains on,
which parameters it trains, how (optimiser, schedule, loss weighting) and for how long. The papers'
protocols (joint training, pretrain-adapt-finetune, VTD's CPF) are just different recipes.

A stage's kind, optimiser, schedule and loss weighting are `type` + options plug-ins (registries
``STAGE_KINDS``, ``OPTIMIZERS``, ``SCHEDULES`` in `drivemtl.engine.stages` and
``LOSS_WEIGHTINGS`` in `drivemtl.engine.loss_weighting`); each entry validates its own options.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from drivemtl.config.base import StrictModel, plugin, plugin_default
from drivemtl.engine.loss_weighting import LOSS_WEIGHTINGS
from drivemtl.engine.stages import OPTIMIZERS, SCHEDULES, STAGE_KINDS


class PseudoLabelSourceConfig(StrictModel):
    """Pseudo labels written by `drivemtl pseudo-label`, added to a stage as an extra label source."""

    path: Path = Field(description="directory written by `drivemtl pseudo-label`")
    tasks: list[str] | None = Field(None, description="tasks to take from it (default: all)")
    sets: list[str] | None = Field(None, description="image sets to take from it (default: all)")


class StageConfig(StrictModel):
    """One stage of a recipe: data, trainable parameters, optimiser, schedule, length, start point.

    A parameter is trained when its name matches a `trainable` pattern and no `frozen` pattern,
    and the model does not keep it frozen itself (e.g. `model.backbone.frozen_stages`). A pattern
    is a glob over parameter names or `@KIND`, every stage of that kind in the model (`@backbone`,
    `@neck`, `@adapter`, `@group`, `@interaction`, `@decoder`, `@exchange`, `@predictor`). `init` is "previous"
    (the preceding stage's final weights, or fresh weights for the first stage), "scratch",
    "stage:<name>" or a path to a .safetensors file. `kind` says how the stage trains:
    `{type: supervised}` (default) as written; `{type: per_decoder}` runs VTD's per-decoder
    fine-tuning: each task's decoder is trained alone on the sets that carry its labels with
    everything else frozen, and the fine-tuned decoders are merged into one checkpoint.
    """

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    tasks: list[str] | None = Field(None, description="default: every task of the model")
    sets: list[str] | None = Field(None, description="default: every image set of the data")
    pseudo_labels: list[PseudoLabelSourceConfig] = Field(default_factory=list)
    sampler: str = "none"
    batch_size: int = Field(2, gt=0)
    kind: plugin(STAGE_KINDS, "supervised") = Field(  # type: ignore[valid-type]
        default_factory=plugin_default(STAGE_KINDS, "supervised")
    )
    loss_weighting: plugin(LOSS_WEIGHTINGS, "fixed") = Field(  # type: ignore[valid-type]
        default_factory=plugin_default(LOSS_WEIGHTINGS, "fixed")
    )
    trainable: list[str] = Field(default_factory=lambda: ["*"])
    frozen: list[str] = Field(default_factory=list)
    optimizer: plugin(OPTIMIZERS, "adamw") = Field(  # type: ignore[valid-type]
        default_factory=plugin_default(OPTIMIZERS, "adamw")
    )
    schedule: plugin(SCHEDULES, "constant") = Field(  # type: ignore[valid-type]
        default_factory=plugin_default(SCHEDULES, "constant")
    )
    epochs: int | None = Field(None, gt=0)
    steps: int | None = Field(None, gt=0)
    init: str = "previous"
    grad_clip: float | None = Field(None, gt=0.0, description="max global gradient norm")

    @model_validator(mode="after")
    def _one_length(self) -> StageConfig:
        if (self.epochs is None) == (self.steps is None):
            raise ValueError(f"stage '{self.name}': give exactly one of `epochs` or `steps`")
        if self.tasks is not None and not self.tasks:
            raise ValueError(f"stage '{self.name}': `tasks` is empty")
        if self.sets is not None and not self.sets:
            raise ValueError(f"stage '{self.name}': `sets` is empty")
        if not self.trainable:
            raise ValueError(f"stage '{self.name}': `trainable` is empty")
        return self


class RecipeConfig(StrictModel):
    """An ordered list of stages with unique names."""

    stages: list[StageConfig] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_names(self) -> RecipeConfig:
        seen: set[str] = set()
        for stage in self.stages:
            if stage.name in seen:
                raise ValueError(f"stage name '{stage.name}' is used twice")
            if stage.init.startswith("stage:") and stage.init[6:] not in seen:
                raise ValueError(
                    f"stage '{stage.name}': init '{stage.init}' names no earlier stage"
                )
            seen.add(stage.name)
        return self


class TrainConfig(StrictModel):
    """Run-level training options (hardware, precision, logging, checkpoints, guards)."""

    accelerator: Literal["auto", "cpu", "gpu"] = "auto"
    devices: int = Field(1, gt=0)
    num_nodes: int = Field(1, gt=0)
    strategy: Literal["auto", "ddp", "ddp_spawn"] = "auto"
    precision: Literal["32-true", "bf16-mixed", "16-mixed"] = "32-true"
    num_workers: int = Field(0, ge=0)
    deterministic: bool = False
    log_every_n_steps: int = Field(10, gt=0)
    checkpoint_every_n_steps: int = Field(500, gt=0)
    max_nonfinite_steps: int = Field(
        5, gt=0, description="stop after this many consecutive steps with a NaN / Inf loss"
    )
