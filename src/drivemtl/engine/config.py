"""Pydantic schemas of training recipes: stages, optimisers, schedules, loss weighting, run options.

A recipe is an ordered list of stages; each stage says which tasks and image sets it trains on,
which parameters it trains, how (optimiser, schedule, loss weighting) and for how long. The papers'
protocols (joint training, pretrain-adapt-finetune, VTD's CPF) are just different recipes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from drivemtl.config.base import StrictModel


class OptimizerConfig(StrictModel):
    """Optimiser of a stage (AdamW or SGD) and its hyper-parameters."""

    name: Literal["adamw", "sgd"] = "adamw"
    lr: float = Field(1e-4, gt=0.0)
    weight_decay: float = Field(1e-4, ge=0.0)
    betas: tuple[float, float] = (0.9, 0.999)
    momentum: float = Field(0.9, ge=0.0, description="SGD only")
    nesterov: bool = False
    decay_norm_and_bias: bool = Field(
        False, description="apply weight decay to normalisation weights and biases too"
    )


class ScheduleConfig(StrictModel):
    """Learning-rate schedule stepped once per optimiser step, with an optional linear warm-up.

    `milestones` (step schedule) are in the stage's length unit: epochs when the stage gives
    `epochs`, steps when it gives `steps`.
    """

    name: Literal["constant", "step", "poly", "cosine"] = "constant"
    warmup_steps: int = Field(0, ge=0)
    warmup_factor: float = Field(0.001, gt=0.0, le=1.0, description="lr factor at step 0")
    milestones: list[float] = Field(default_factory=list)
    gamma: float = Field(0.1, gt=0.0)
    power: float = Field(0.9, gt=0.0, description="poly exponent")
    min_lr_factor: float = Field(0.0, ge=0.0, le=1.0, description="poly / cosine floor")

    @model_validator(mode="after")
    def _milestones_sorted(self) -> ScheduleConfig:
        if self.milestones != sorted(self.milestones) or any(m <= 0 for m in self.milestones):
            raise ValueError(f"milestones must be positive and increasing, got {self.milestones}")
        return self


class LossWeightingConfig(StrictModel):
    """How per-task losses combine into one: fixed weights, uncertainty weighting or DWA.

    `weights` (fixed) override `model.tasks.<task>.loss_weight` for this stage.
    """

    name: Literal["fixed", "uncertainty", "dwa"] = "fixed"
    weights: dict[str, float] = Field(default_factory=dict)
    temperature: float = Field(2.0, gt=0.0, description="DWA softmax temperature")
    window: int = Field(
        0, ge=0, description="DWA: steps per loss-averaging window (0 = one sampler epoch)"
    )
    init_log_variance: float = Field(0.0, description="uncertainty: initial s_t = log sigma_t^2")


class PseudoLabelSourceConfig(StrictModel):
    """Pseudo labels written by `drivemtl pseudo-label`, added to a stage as an extra label source."""

    path: Path = Field(description="directory written by `drivemtl pseudo-label`")
    tasks: list[str] | None = Field(None, description="tasks to take from it (default: all)")
    sets: list[str] | None = Field(None, description="image sets to take from it (default: all)")


class StageConfig(StrictModel):
    """One stage of a recipe: data, trainable parameters, optimiser, schedule, length, start point.

    A parameter is trained when its name matches a `trainable` glob and no `frozen` glob.
    `init` is "previous" (the preceding stage's final weights, or fresh weights for the first
    stage), "scratch", "stage:<name>" or a path to a .safetensors file. `per_decoder: true` runs
    VTD's per-decoder fine-tuning: each task's decoder is trained alone on the sets that carry its
    labels with everything else frozen, and the fine-tuned decoders are merged into one checkpoint.
    """

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    tasks: list[str] | None = Field(None, description="default: every task of the model")
    sets: list[str] | None = Field(None, description="default: every image set of the data")
    pseudo_labels: list[PseudoLabelSourceConfig] = Field(default_factory=list)
    sampler: str = "none"
    batch_size: int = Field(2, gt=0)
    loss_weighting: LossWeightingConfig = Field(default_factory=LossWeightingConfig)
    trainable: list[str] = Field(default_factory=lambda: ["*"])
    frozen: list[str] = Field(default_factory=list)
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    epochs: int | None = Field(None, gt=0)
    steps: int | None = Field(None, gt=0)
    init: str = "previous"
    per_decoder: bool = False
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
