"""Multi-task unsupervised domain adaptation: the `uda_adversarial` stage kind (DenseMTL MTL-UDA).

The stage trains its tasks on its (labelled, source-domain) `sets` as a supervised stage does and,
at every step, also sees a batch of the unlabelled `target_sets`. Each adapted task has an
output-level patch discriminator (AdvEnt) over the task's `domain_map` (entropy map for
segmentation, normalised depth, normals): the discriminators learn to tell source outputs (1)
from target outputs (0), and the network is trained to fool them on the target batch with
`lambda_adv` times BCE(D(Q_target), 1) added to its loss (DenseMTL supplement, eqs. 7-9).

Target sets are read as images only: any labels they carry are ignored (with a warning), so the
stage can never train on them. The discriminators live in the stage's Lightning module and its
checkpoint (exact resume), not in the model: the stage's weights are the adapted network alone.
The Lightning side lives in `drivemtl.engine.adversarial_module`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any

from pydantic import Field

from drivemtl.config.base import plugin, plugin_default
from drivemtl.config.loader import ConfigError
from drivemtl.data import DataConfig
from drivemtl.engine.stages import (
    OPTIMIZERS,
    STAGE_KINDS,
    OptimizerGroupOptions,
    StageKindOptions,
)
from drivemtl.engine.units import StagePlan, Unit
from drivemtl.models.discriminators import DISCRIMINATORS

if TYPE_CHECKING:
    from drivemtl.engine.plan import StageRequest


class AdaptationError(ConfigError):
    """An adversarial stage that cannot run as written (bad target sets or tasks)."""


class AdversarialOptions(StageKindOptions):
    """Options of the `uda_adversarial` kind: the target domain, the adapted tasks, the game."""

    target_sets: list[str] = Field(
        min_length=1, description="image sets of the unlabelled target domain (labels ignored)"
    )
    adapt: list[str] | None = Field(
        None,
        description="tasks with a discriminator (default: every task of the stage that has an "
        "output map for one, e.g. semantic, depth, normals, edges)",
    )
    lambda_adv: float = Field(5e-3, ge=0.0, description="weight of the adversarial losses")
    task_lambda: dict[str, float] = Field(
        default_factory=dict, description="per-task lambda_adv overrides"
    )
    target_batch_size: int | None = Field(
        None, ge=1, description="target images per step (default: the stage's batch_size)"
    )
    discriminator: plugin(DISCRIMINATORS, "patch") = Field(  # type: ignore[valid-type]
        default_factory=plugin_default(DISCRIMINATORS, "patch")
    )
    discriminator_optimizer: plugin(OPTIMIZERS, "adamw") = Field(  # type: ignore[valid-type]
        default_factory=plugin_default(
            OPTIMIZERS, "adamw", lr=1e-4, betas=(0.9, 0.99), weight_decay=0.0
        ),
        description="optimiser of the discriminators (AdvEnt: Adam, lr 1e-4, betas 0.9 / 0.99)",
    )
    optimizers: list[OptimizerGroupOptions] = Field(
        default_factory=list, description="optimiser groups of the network, as in `supervised`"
    )

    def weight(self, task: str) -> float:
        """lambda_adv of `task`."""
        return float(self.task_lambda.get(task, self.lambda_adv))


def adaptable(task: str) -> bool:
    """Whether `task`'s plug-in gives a map for an output-level discriminator."""
    from drivemtl.tasks.base import TASKS, Task

    cls = TASKS.get(task) if task in TASKS else None
    return cls is not None and cls.domain_map is not Task.domain_map


@dataclass
class AdversarialPlan(StagePlan):
    """A supervised unit plus its target domain and the discriminator game (see module doc)."""

    target_sets: list[str] = field(default_factory=list)
    target_data: DataConfig | None = None
    target_labels: dict[str, list[str]] = field(default_factory=dict)
    adapt: list[str] = field(default_factory=list)
    options: AdversarialOptions | None = None

    def training_modules(self, module: Any, datamodule: Any) -> tuple[Any, Any]:
        """The adversarial Lightning module and the paired source / target data module."""
        from drivemtl.engine.adversarial_module import adversarial_modules

        return adversarial_modules(self, module, datamodule)


def _target_data(request: StageRequest, target_sets: list[str]) -> DataConfig:
    """The run's data restricted to the target sets, read as images only (no task)."""
    from drivemtl.engine.plan import stage_data

    data = stage_data(request.run_data, target_sets, [], request.where)
    sets = {name: cfg.model_copy(update={"tasks": []}) for name, cfg in data.sets.items()}
    return data.model_copy(update={"sets": sets, "label_settings": {}, "label_setting": None})


def _source_sets(options: AdversarialOptions, request: StageRequest) -> list[str]:
    """The stage's source sets: its `sets`, or (unset) every set but the targets."""
    known = sorted(request.run_data.sets)
    unknown = [s for s in options.target_sets if s not in request.run_data.sets]
    if unknown:
        raise AdaptationError(
            f"{request.where}: target_sets {unknown} are not image sets of the data ({known})"
        )
    if request.stage.sets is None:
        source = [s for s in request.sets if s not in options.target_sets]
        if not source:
            raise AdaptationError(f"{request.where}: no set is left for the source domain")
        return source
    shared = [s for s in options.target_sets if s in request.sets]
    if shared:
        raise AdaptationError(
            f"{request.where}: sets {shared} are both source (`sets`) and target "
            "(`kind.target_sets`); give the stage's `sets` the labelled source domain only"
        )
    return list(request.sets)


def _adapted_tasks(options: AdversarialOptions, request: StageRequest) -> list[str]:
    """The tasks with a discriminator, checked against the stage's tasks and `task_lambda`."""
    tasks = _requested_tasks(options, request)
    stray = sorted(set(options.task_lambda) - set(tasks))
    if stray:
        raise AdaptationError(
            f"{request.where}: kind.task_lambda names {stray}, which are not adapted ({tasks})"
        )
    return tasks


def _requested_tasks(options: AdversarialOptions, request: StageRequest) -> list[str]:
    if options.adapt is None:
        tasks = [t for t in request.tasks if adaptable(t)]
        if not tasks:
            raise AdaptationError(
                f"{request.where}: none of the stage's tasks {request.tasks} gives an output map "
                "for a domain discriminator (the task plug-in's `domain_map`)"
            )
        return tasks
    outside = [t for t in options.adapt if t not in request.tasks]
    if outside:
        raise AdaptationError(
            f"{request.where}: kind.adapt names {outside}, which the stage does not train "
            f"({request.tasks})"
        )
    unable = [t for t in options.adapt if not adaptable(t)]
    if unable:
        raise AdaptationError(
            f"{request.where}: tasks {unable} give no output map for a domain discriminator "
            "(their task plug-in has no `domain_map`)"
        )
    return list(options.adapt)


@STAGE_KINDS.register("uda_adversarial", options=AdversarialOptions)
def uda_adversarial(options: AdversarialOptions, request: StageRequest) -> list[Unit]:
    """One unit: the supervised stage on its source sets plus the adversarial game on the
    target sets."""
    source = _source_sets(options, request)
    adapt = _adapted_tasks(options, request)
    base = request.train(sets=source, optimizers=options.optimizers)
    values = {f.name: getattr(base, f.name) for f in fields(StagePlan) if f.init}
    return [
        AdversarialPlan(
            **values,
            target_sets=list(options.target_sets),
            target_data=_target_data(request, list(options.target_sets)),
            target_labels={s: list(request.run_data.sets[s].tasks) for s in options.target_sets},
            adapt=adapt,
            options=options,
        )
    ]
