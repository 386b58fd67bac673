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
from typing import Any, Literal

from pydantic import Field, model_validator

from drivemtl.config.base import StrictModel, plugin, plugin_default
from drivemtl.engine.loss_weighting import LOSS_WEIGHTINGS
from drivemtl.engine.stages import OPTIMIZERS, SCHEDULES, STAGE_KINDS


class PseudoLabelSourceConfig(StrictModel):
    """Pseudo labels added to a stage as an extra label source: a directory written by `drivemtl
    pseudo-label`, or an earlier `pseudo_label` stage of the same recipe (which writes them into
    the run directory; the stage need not have run when the recipe is planned)."""

    path: Path | None = Field(None, description="directory written by `drivemtl pseudo-label`")
    stage: str | None = Field(None, description="an earlier `pseudo_label` stage of the recipe")
    tasks: list[str] | None = Field(None, description="tasks to take from it (default: all)")
    sets: list[str] | None = Field(None, description="image sets to take from it (default: all)")

    @model_validator(mode="after")
    def _one_source(self) -> PseudoLabelSourceConfig:
        if (self.path is None) == (self.stage is None):
            raise ValueError("a pseudo-label source gives exactly one of `path` or `stage`")
        return self

    def describe(self) -> str:
        """How error messages name the source."""
        return f"{{stage: {self.stage}}}" if self.stage is not None else str(self.path)


# Stage fields that only a training kind reads: a stage of a kind that does not train (its
# options' `trains` is False) must leave them at their defaults.
TRAINING_FIELDS = (
    "pseudo_labels",
    "sampler",
    "sampler_options",
    "loss_weighting",
    "trainable",
    "frozen",
    "optimizer",
    "schedule",
    "grad_clip",
)


class StageConfig(StrictModel):
    """One stage of a recipe: data, trainable parameters, optimiser, schedule, length, start point.

    A parameter is trained when its name matches a `trainable` pattern and no `frozen` pattern,
    and the model does not keep it frozen itself (e.g. `model.backbone.frozen_stages`). A pattern
    is a glob over parameter names or `@KIND`, every stage of that kind in the model (`@backbone`,
    `@neck`, `@adapter`, `@group`, `@interaction`, `@decoder`, `@exchange`, `@predictor`). `init` is "previous"
    (the preceding stage's final weights, or fresh weights for the first stage), "scratch",
    "stage:<name>" or a path to a .safetensors file. `kind` says how the stage trains:
    `{type: supervised}` (default) as written (its `optimizers: [{params: [...], type, ...}]`
    splits the parameters among several optimisers); `{type: per_decoder}` runs VTD's per-decoder
    fine-tuning: each task's decoder is trained alone on the sets that carry its labels with
    everything else frozen, and the fine-tuned decoders are merged into one checkpoint;
    `{type: pseudo_label}` trains nothing: a teacher labels the stage's `sets` for its `tasks` into
    the run directory, for later stages' `pseudo_labels: [{stage: NAME}]` (see
    `drivemtl.engine.stages.PseudoLabelOptions`). A stage of a kind that does not train has no
    length and no training fields (optimizer, sampler, ...).
    """

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    tasks: list[str] | None = Field(None, description="default: every task of the model")
    sets: list[str] | None = Field(None, description="default: every image set of the data")
    pseudo_labels: list[PseudoLabelSourceConfig] = Field(default_factory=list)
    sampler: str = "none"
    sampler_options: dict[str, Any] = Field(
        default_factory=dict, description="the sampler's options, e.g. weighted: task_epochs"
    )
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
        if not getattr(self.kind, "trains", True):
            self._check_untrained()
        elif (self.epochs is None) == (self.steps is None):
            raise ValueError(f"stage '{self.name}': give exactly one of `epochs` or `steps`")
        if self.tasks is not None and not self.tasks:
            raise ValueError(f"stage '{self.name}': `tasks` is empty")
        if self.sets is not None and not self.sets:
            raise ValueError(f"stage '{self.name}': `sets` is empty")
        if not self.trainable:
            raise ValueError(f"stage '{self.name}': `trainable` is empty")
        return self

    def _check_untrained(self) -> None:
        """A stage whose kind trains nothing sets no length and no training field."""
        given = [f for f in ("steps", "epochs") if getattr(self, f) is not None]
        given += [
            f
            for f in TRAINING_FIELDS
            if getattr(self, f) != type(self).model_fields[f].get_default(call_default_factory=True)
        ]
        if given:
            raise ValueError(
                f"stage '{self.name}': a {self.kind.type} stage trains nothing, so "
                f"{', '.join(f'`{f}`' for f in given)} would have no effect; drop them"
            )


class RecipeConfig(StrictModel):
    """An ordered list of stages with unique names."""

    stages: list[StageConfig] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_names(self) -> RecipeConfig:
        seen: list[str] = []
        for stage in self.stages:
            if stage.name in seen:
                raise ValueError(f"stage name '{stage.name}' is used twice")
            if stage.init.startswith("stage:") and stage.init[6:] not in seen:
                raise ValueError(
                    f"stage '{stage.name}': init '{stage.init}' names no earlier stage"
                )
            for source in stage.pseudo_labels:
                if source.stage is not None and source.stage not in seen:
                    raise ValueError(
                        f"stage '{stage.name}': pseudo-label source {source.describe()}: "
                        f"'{source.stage}' names no earlier stage of the recipe"
                        + (f" (earlier: {', '.join(seen)})" if seen else "")
                    )
            seen.append(stage.name)
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


# Stage kinds shipped outside `drivemtl.engine.stages` register themselves on import.
from drivemtl.engine import adversarial  # noqa: E402, F401  (uda_adversarial)
