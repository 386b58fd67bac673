"""The units a recipe runs: what a stage kind expands a stage into, and how each unit runs.

A stage kind (`drivemtl.engine.stages.STAGE_KINDS`) is a plug-in for planning and execution:
its entry turns one recipe stage into units (`drivemtl.engine.plan` validates them before
anything runs), and each unit's `run(context)` executes it. The trainer only walks the units in
order, skips those a resumed run has finished, and records each result in `run.json`; it knows
no unit type. Shipped units:

- `StagePlan`: train through Lightning (`context.train`), resumable from `last.ckpt`;
- `MergePlan`: merge the decoders fine-tuned by earlier units into one model;
- `PseudoLabelPlan`: label image sets with a teacher into the unit's folder.

A kind with its own execution returns its own `Unit` subclass (a dataclass with `run`); its
`run` may call `context.train(plan)` to train any `StagePlan` with the engine's exact resume.

Every unit owns the folder `RUN/stages/NN-NAME/` (NN: its position among the run's units) and
returns a `StageResult` naming the weights it ends with: later units refer to them as
`stage:NAME`, and the last unit's weights are the run's final weights. A unit must give the same
result when a killed run re-runs it from its start (resume).

Nothing here imports Lightning.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from drivemtl.data import DataConfig
from drivemtl.engine.stages import FreezePlan, OptimizerGroup
from drivemtl.log import get_logger
from drivemtl.structures.fields import known_tasks, pseudo_mask_field

if TYPE_CHECKING:
    from drivemtl.engine.config import StageConfig
    from drivemtl.engine.trainer import RunContext

log = get_logger(__name__)

WEIGHTS = "weights.safetensors"
LABELS_DIR = "pseudo_labels"
PSEUDO_CARD = "pseudo_labels.yaml"
PSEUDO_JSON_TASKS = ("tagging", "detection", "pose")


def pseudo_mask_tasks() -> tuple[str, ...]:
    """Tasks whose pseudo labels are PNG maps: one dense field declared with `pseudo_labels`."""
    return tuple(t for t in known_tasks() if pseudo_mask_field(t) is not None)


def pseudo_tasks() -> tuple[str, ...]:
    """Every task a teacher can pseudo-label: the Scalabel JSON tasks and the mask tasks."""
    return PSEUDO_JSON_TASKS + pseudo_mask_tasks()


def unit_path(index: int, name: str) -> Path:
    """The folder of unit `name` at position `index`, relative to the run directory."""
    return Path("stages") / f"{index:02d}-{name}"


def pseudo_label_paths(set_name: str, tasks: list[str]) -> dict[str, str]:
    """Where the labels of `set_name` for each of `tasks` lie in a pseudo-label directory."""
    return {
        task: f"{set_name}/labels.json" if task in PSEUDO_JSON_TASKS else f"{set_name}/masks/{task}"
        for task in tasks
    }


@dataclass
class StageResult:
    """A finished unit: its weights, optimiser steps and log folder."""

    name: str
    weights: Path
    steps: int = 0
    log_dir: Path | None = None


@dataclass
class Unit:
    """One unit of a run: a name unique in the run, a start point and its position (`index`).

    `init` is "scratch", "stage:<unit>" or an absolute path to weights. Subclasses implement
    `run`; `reads` and `pseudo_labels` tell the planner what they depend on and provide.
    """

    name: str
    init: str
    index: int = field(default=-1, kw_only=True)

    def reads(self) -> list[str]:
        """Names of the earlier units whose results this unit reads (checked when planning)."""
        return [self.init[len("stage:") :]] if self.init.startswith("stage:") else []

    def pseudo_labels(self) -> dict[str, dict[str, str]]:
        """Labels this unit writes: set -> task -> path relative to its folder (default: none).

        A later stage adds them with `pseudo_labels: [{stage: <this stage>}]`.
        """
        return {}

    def run(self, context: RunContext) -> StageResult:
        """Execute the unit in `context`; the result's weights lie in the run directory."""
        raise NotImplementedError(f"{type(self).__name__} does not implement run()")


@dataclass
class StagePlan(Unit):
    """One unit of training: a stage, or one decoder of a per-decoder stage.

    `optimizers` are the optimiser groups of a stage with several optimisers (the stage's
    `optimizer` steps the trained parameters none of them takes); empty: one optimiser.
    """

    config: StageConfig
    tasks: list[str]
    sets: list[str]
    data: DataConfig
    freeze: FreezePlan
    group: str | None = None
    optimizers: list[OptimizerGroup] = field(default_factory=list)

    def run(self, context: RunContext) -> StageResult:
        """Train through Lightning (continues from `last.ckpt` when the run resumes)."""
        return context.train(self)

    def training_modules(self, module: Any, datamodule: Any) -> tuple[Any, Any]:
        """The Lightning module and data module that train this unit, given the engine's
        (`MultiTaskModule`, `StageDataModule`); a unit with its own training step (e.g.
        adversarial domain adaptation) returns its own, built from them. Default: unchanged."""
        return module, datamodule


@dataclass
class MergePlan(Unit):
    """Merge the decoders fine-tuned by the sub-stages of a per-decoder stage into one model."""

    parts: dict[str, str] = field(default_factory=dict)  # task -> sub-stage name

    def reads(self) -> list[str]:
        """The start point and every sub-stage a decoder comes from."""
        return [*super().reads(), *self.parts.values()]

    def run(self, context: RunContext) -> StageResult:
        """Each task's decoder from its sub-stage, everything else from the start point."""
        from drivemtl.engine.checkpoint import load_weights, merge_decoders, save_weights

        model = context.start_model(self)
        finetuned = {
            task: load_weights(context.weights(f"stage:{sub}")) for task, sub in self.parts.items()
        }
        merged = merge_decoders(model.state_dict(), finetuned, model.decoder_prefixes())
        path = context.unit_dir(self) / WEIGHTS
        save_weights(merged, path, {"stage": self.name, "merged": ",".join(self.parts)})
        return StageResult(self.name, path)


@dataclass
class PseudoLabelPlan(Unit):
    """Label image sets with a teacher; the unit's weights are its start point, unchanged.

    Writes `RUN/stages/NN-NAME/pseudo_labels/` with the layout and card of `drivemtl
    pseudo-label` (`drivemtl.engine.pseudo_label`). `teacher` is "stage:<unit>" or an absolute
    weights path; `labels` maps each set to the tasks it is labelled for.
    """

    teacher: str = "scratch"
    labels: dict[str, list[str]] = field(default_factory=dict)
    rules: dict[str, Any] = field(default_factory=dict)
    batch_size: int = 4

    def reads(self) -> list[str]:
        """The start point and the teacher."""
        teacher = self.teacher[len("stage:") :] if self.teacher.startswith("stage:") else None
        return [*super().reads(), *([teacher] if teacher else [])]

    def pseudo_labels(self) -> dict[str, dict[str, str]]:
        """Set -> task -> path under the unit's folder."""
        return {
            s: {t: f"{LABELS_DIR}/{rel}" for t, rel in pseudo_label_paths(s, tasks).items()}
            for s, tasks in self.labels.items()
        }

    def run(self, context: RunContext) -> StageResult:
        """Label into a scratch folder, then rename it into place (a re-run starts over)."""
        from drivemtl.engine.checkpoint import save_weights
        from drivemtl.engine.pseudo_label import PseudoLabelRules, label_sets

        folder = context.unit_dir(self)
        weights = folder / WEIGHTS
        if context.is_zero:
            partial = folder / f"{LABELS_DIR}.partial"
            shutil.rmtree(partial, ignore_errors=True)
            teacher = context.weights(self.teacher)
            assert teacher is not None, "planning gives a pseudo-label unit a teacher"
            log.info(
                "stage %s: pseudo-labelling %s with %s into %s",
                self.name,
                ", ".join(f"{s} ({', '.join(t)})" for s, t in self.labels.items()),
                teacher,
                folder / LABELS_DIR,
            )
            label_sets(
                context.config,
                teacher,
                self.labels,
                partial,
                PseudoLabelRules(**self.rules),
                batch_size=self.batch_size,
                device=context.inference_device(),
            )
            shutil.rmtree(folder / LABELS_DIR, ignore_errors=True)
            os.replace(partial, folder / LABELS_DIR)
            meta: dict[str, Any] = {"stage": self.name, "steps": "0", "teacher": str(teacher)}
            save_weights(context.start_model(self), weights, meta)
        context.wait_for(weights)
        return StageResult(self.name, weights)
