"""The parts of a training stage: freezing by patterns, and the optimiser, lr-schedule and stage
kind plug-ins.

Each plug-in kind is a registry whose entries carry their own pydantic options (`type` + options,
see `drivemtl.config.base`); options every entry of a kind shares live in a base options class:

- ``OPTIMIZERS``: `entry(options, param_groups) -> torch.optim.Optimizer`; the param groups (decay /
  no decay) are built generically from `OptimizerOptions` (lr, weight_decay, decay_norm_and_bias).
- ``SCHEDULES``: `entry(options, length) -> factor(step)`, the lr multiplier of the main schedule;
  the linear warm-up of `ScheduleOptions` (warmup_steps, warmup_factor) is applied on top, once.
- ``STAGE_KINDS``: `entry(options, request) -> [Unit, ...]`, expands one recipe stage into the
  units the trainer runs (`drivemtl.engine.plan.StageRequest` offers the helpers that make the
  shipped units); each unit runs itself (`Unit.run(context)`, `drivemtl.engine.units`), so a kind
  with its own execution returns its own unit type. Options whose `trains` is False mark a kind
  that trains nothing (its stage has no length and no training fields).

Nothing here imports Lightning.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from pydantic import Field, model_serializer, model_validator
from torch import nn

from drivemtl.config.base import PluginField, PluginOptions, StrictModel, plugin
from drivemtl.errors import DriveMTLError
from drivemtl.registry import Registry

if TYPE_CHECKING:
    from drivemtl.engine.plan import StageRequest
    from drivemtl.engine.units import Unit

_NORM_TYPES = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)

OPTIMIZERS: Registry[Callable[..., torch.optim.Optimizer]] = Registry("optimizer")
SCHEDULES: Registry[Callable[..., Callable[[int], float]]] = Registry("schedule")
STAGE_KINDS: Registry[Callable[..., list[Any]]] = Registry("stage kind")


def plugin_options(registry: Registry[Any], default: str, spec: Any) -> Any:
    """Validated options of `spec` ({type: NAME, ...}, `type` defaulting to `default`)."""
    return PluginField(registry, default).validate(spec)


# -- freezing ------------------------------------------------------------------------------------
class FreezeError(DriveMTLError):
    """A trainable / frozen pattern matches nothing, or freezing leaves nothing to train."""


@dataclass(frozen=True)
class FreezePlan:
    """Which parameters a stage trains and which it keeps fixed (names in `named_parameters`).

    `fixed` (a subset of `frozen`) are the parameters the model itself keeps frozen.
    """

    trainable: tuple[str, ...]
    frozen: tuple[str, ...]
    fixed: tuple[str, ...] = ()


def _pattern_matches(name: str, pattern: str, aliases: Mapping[str, Sequence[str]]) -> bool:
    globs = aliases.get(pattern)
    if globs is not None:
        return any(fnmatchcase(name, g) for g in globs)
    return fnmatchcase(name, pattern)


def matching(
    names: Iterable[str],
    patterns: Sequence[str],
    aliases: Mapping[str, Sequence[str]] | None = None,
) -> list[str]:
    """The names matching any of `patterns` (globs, or keys of `aliases` such as `@neck`)."""
    aliases = aliases or {}
    return [n for n in names if any(_pattern_matches(n, p, aliases) for p in patterns)]


def plan_freezing(
    names: list[str],
    trainable: list[str],
    frozen: list[str],
    where: str = "stage",
    fixed: Iterable[str] = (),
    aliases: Mapping[str, Sequence[str]] | None = None,
) -> FreezePlan:
    """Split parameter names into trained / frozen; every pattern must do what it claims.

    A `trainable` pattern that matches no parameter, or only parameters in `fixed` (those the model
    keeps frozen itself, e.g. `backbone.frozen_stages`), is an error; so is a `frozen` pattern that
    matches no parameter the `trainable` patterns select, and a plan that trains nothing. `fixed`
    parameters are never trained. `aliases` maps a pattern (e.g. `@neck`) to the globs it stands
    for.
    """
    fixed_set = set(fixed)
    aliases = aliases or {}

    def matches(name: str, patterns: list[str]) -> bool:
        return any(_pattern_matches(name, p, aliases) for p in patterns)

    for pattern in trainable:
        hits = [n for n in names if _pattern_matches(n, pattern, aliases)]
        if not hits:
            raise FreezeError(
                f"{where}: trainable pattern '{pattern}' matches no parameter "
                f"(parameters start with: {_prefix_summary(names)})"
            )
        if all(n in fixed_set for n in hits):
            raise FreezeError(
                f"{where}: trainable pattern '{pattern}' matches only parameters the model keeps "
                f"frozen itself ({len(hits)} tensors, e.g. {hits[0]}; see the model's options, "
                "e.g. model.backbone.frozen_stages)"
            )
    selected = [n for n in names if matches(n, trainable)]
    for pattern in frozen:
        if not any(_pattern_matches(n, pattern, aliases) for n in selected):
            raise FreezeError(
                f"{where}: frozen pattern '{pattern}' freezes no parameter that the trainable "
                f"patterns {trainable} select (parameters start with: {_prefix_summary(names)})"
            )
    train = tuple(n for n in selected if not matches(n, frozen) and n not in fixed_set)
    if not train:
        kept = " and the parameters the model keeps frozen" if fixed_set else ""
        raise FreezeError(
            f"{where}: trainable {trainable} minus frozen {frozen}{kept} leaves nothing"
        )
    keep = set(train)
    return FreezePlan(
        trainable=train,
        frozen=tuple(n for n in names if n not in keep),
        fixed=tuple(n for n in names if n in fixed_set),
    )


def _prefix_summary(names: list[str]) -> str:
    prefixes = sorted({".".join(n.split(".")[:2]) for n in names})
    text = ", ".join(prefixes[:12])
    return text + (", ..." if len(prefixes) > 12 else "")


def apply_freezing(model: nn.Module, plan: FreezePlan) -> None:
    """Set `requires_grad` of every parameter of `model` according to `plan`.

    A plan that would train a parameter the model keeps frozen itself (its
    `fixed_parameter_names()`, when it has them) is an error: such a plan was made for another
    model.
    """
    keep = set(plan.trainable)
    fixed_names = getattr(model, "fixed_parameter_names", None)
    if callable(fixed_names):
        clash = sorted(keep & set(fixed_names()))
        if clash:
            raise FreezeError(
                f"the freezing plan trains {len(clash)} parameters the model keeps frozen, "
                f"e.g. {clash[:3]}"
            )
    for name, param in model.named_parameters():
        param.requires_grad_(name in keep)


def freeze_norm_statistics(model: nn.Module) -> list[str]:
    """Put normalisation layers whose parameters are all frozen in eval mode (fixed running stats).

    Call after every `model.train()`: a frozen backbone must not drift through BatchNorm
    statistics. Returns the names of the layers switched to eval.
    """
    switched = []
    for name, module in model.named_modules():
        if not isinstance(module, _NORM_TYPES):
            continue
        params = list(module.parameters(recurse=False))
        if params and not any(p.requires_grad for p in params):
            module.eval()
            switched.append(name)
    return switched


# -- optimisers ----------------------------------------------------------------------------------
class OptimizerOptions(PluginOptions):
    """What every optimiser takes: learning rate and weight decay (and where decay applies)."""

    lr: float = Field(1e-4, gt=0.0)
    weight_decay: float = Field(1e-4, ge=0.0)
    decay_norm_and_bias: bool = Field(
        False, description="apply weight decay to normalisation weights and biases too"
    )
    lr_scale: dict[str, float] = Field(
        default_factory=dict,
        description="parameter-name glob -> lr multiplier, first match wins (e.g. DenseMTL's "
        "encoder at a tenth of the decoder's lr: {'backbone.*': 0.1})",
    )


class AdamWOptions(OptimizerOptions):
    """AdamW (decoupled weight decay)."""

    betas: tuple[float, float] = (0.9, 0.999)


class SGDOptions(OptimizerOptions):
    """SGD with (Nesterov) momentum."""

    momentum: float = Field(0.9, ge=0.0)
    nesterov: bool = False


@OPTIMIZERS.register("adamw", options=AdamWOptions)
def adamw(options: AdamWOptions, groups: list[dict[str, Any]]) -> torch.optim.Optimizer:
    """torch.optim.AdamW over `groups`."""
    return torch.optim.AdamW(groups, lr=options.lr, betas=options.betas)


@OPTIMIZERS.register("sgd", options=SGDOptions)
def sgd(options: SGDOptions, groups: list[dict[str, Any]]) -> torch.optim.Optimizer:
    """torch.optim.SGD over `groups`."""
    return torch.optim.SGD(
        groups, lr=options.lr, momentum=options.momentum, nesterov=options.nesterov
    )


def build_optimizer(
    named_params: list[tuple[str, nn.Parameter]],
    cfg: OptimizerOptions | Mapping[str, Any],
    norm_and_bias_names: set[str] | None = None,
) -> torch.optim.Optimizer:
    """The optimiser `cfg` names over the trainable parameters, in a decay and a no-decay group.

    `norm_and_bias_names` lists the parameters exempt from decay (see `no_decay_names`); they get
    weight decay 0 unless `decay_norm_and_bias`.
    """
    options = plugin_options(OPTIMIZERS, "adamw", cfg)
    params = [(n, p) for n, p in named_params if p.requires_grad]
    if not params:
        raise FreezeError("no trainable parameter to optimise")
    exempt = set() if options.decay_norm_and_bias else (norm_and_bias_names or set())
    groups: list[dict[str, Any]] = []
    for scale, members in _lr_scale_groups(params, options.lr_scale).items():
        lr = {} if scale == 1.0 and not options.lr_scale else {"lr": options.lr * scale}
        decay = [p for n, p in members if n not in exempt]
        no_decay = [p for n, p in members if n in exempt]
        if decay or not groups:
            groups.append({"params": decay, "weight_decay": options.weight_decay, **lr})
        if no_decay:
            groups.append({"params": no_decay, "weight_decay": 0.0, **lr})
    return OPTIMIZERS.get(options.type)(options, groups)


def _lr_scale_groups(
    params: list[tuple[str, nn.Parameter]], lr_scale: Mapping[str, float]
) -> dict[float, list[tuple[str, nn.Parameter]]]:
    """Trainable parameters by lr multiplier (the first matching `lr_scale` glob, else 1); a
    glob that matches no trainable parameter is an error. Globs are over the model's parameter
    names, as in `trainable` / `frozen` (the Lightning module's `model.` prefix is not written)."""
    names = [n.removeprefix("model.") for n, _ in params]
    unused = [g for g in lr_scale if not any(fnmatchcase(n, g) for n in names)]
    if unused:
        raise FreezeError(
            f"optimizer.lr_scale: {unused} match no trainable parameter "
            f"(parameters start with: {_prefix_summary(names)})"
        )
    out: dict[float, list[tuple[str, nn.Parameter]]] = {}
    for (name, param), short in zip(params, names, strict=True):
        scale = next((float(v) for g, v in lr_scale.items() if fnmatchcase(short, g)), 1.0)
        out.setdefault(scale, []).append((name, param))
    return out


class OptimizerGroupOptions(StrictModel):
    """One of several optimisers of a stage: `{params: [PATTERN, ...], type: NAME, ...options}`.

    It optimises the stage's trainable parameters matching `params` (globs or `@KIND`) that no
    earlier group took; the options are those of optimiser `type` (default adamw).
    """

    params: list[str] = Field(min_length=1, description="parameter-name globs or @KIND patterns")
    optimizer: plugin(OPTIMIZERS, "adamw")  # type: ignore[valid-type]

    @model_validator(mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        """The written form is flat: everything but `params` is the optimiser's options."""
        if isinstance(value, dict) and "optimizer" not in value:
            rest = {k: v for k, v in value.items() if k != "params"}
            return {"params": value.get("params"), "optimizer": rest}
        return value

    @model_serializer(mode="wrap")
    def _flat(self, handler: Any) -> dict[str, Any]:
        data = handler(self)
        return {"params": data["params"], **data["optimizer"]}


@dataclass(frozen=True)
class OptimizerGroup:
    """A planned optimiser: the model parameters it steps (names) and its options."""

    names: tuple[str, ...]
    options: OptimizerOptions


def no_decay_names(model: nn.Module) -> set[str]:
    """Names of biases and normalisation-layer parameters (conventionally exempt from decay)."""
    names = set()
    for module_name, module in model.named_modules():
        for param_name, _ in module.named_parameters(recurse=False):
            full = f"{module_name}.{param_name}" if module_name else param_name
            if param_name == "bias" or isinstance(module, _NORM_TYPES):
                names.add(full)
    return names


# -- learning-rate schedules ---------------------------------------------------------------------
class ScheduleOptions(PluginOptions):
    """What every schedule takes: a linear warm-up multiplied onto the main schedule."""

    warmup_steps: int = Field(0, ge=0)
    warmup_factor: float = Field(0.001, gt=0.0, le=1.0, description="lr factor at step 0")


class StepScheduleOptions(ScheduleOptions):
    """Multiply the lr by `gamma` at each milestone (in the stage's length unit)."""

    milestones: list[float] = Field(
        default_factory=list, description="epochs when the stage gives `epochs`, else steps"
    )
    gamma: float = Field(0.1, gt=0.0)

    @model_validator(mode="after")
    def _milestones_sorted(self) -> StepScheduleOptions:
        if self.milestones != sorted(self.milestones) or any(m <= 0 for m in self.milestones):
            raise ValueError(f"milestones must be positive and increasing, got {self.milestones}")
        return self


class PolyScheduleOptions(ScheduleOptions):
    """min + (1 - min) (1 - progress)^power."""

    power: float = Field(0.9, gt=0.0, description="poly exponent")
    min_lr_factor: float = Field(0.0, ge=0.0, le=1.0, description="floor")


class CosineScheduleOptions(ScheduleOptions):
    """min + (1 - min) (1 + cos(pi progress)) / 2."""

    min_lr_factor: float = Field(0.0, ge=0.0, le=1.0, description="floor")


@dataclass(frozen=True)
class StageLength:
    """How long a stage trains: optimiser steps in all and per length unit (an epoch or a step)."""

    total_steps: int
    steps_per_unit: int = 1

    def steps(self, units: float) -> int:
        """A length in the stage's unit (epochs or steps) as optimiser steps."""
        return round(units * self.steps_per_unit)

    def progress(self, step: int) -> float:
        """Fraction of the stage done at `step` (0-based), clipped to [0, 1]."""
        total = max(1, self.total_steps)
        return min(max(step, 0), total) / total


@SCHEDULES.register("constant", options=ScheduleOptions)
def constant(options: ScheduleOptions, length: StageLength) -> Callable[[int], float]:
    """Factor 1 throughout."""
    return lambda step: 1.0


@SCHEDULES.register("step", options=StepScheduleOptions)
def step_schedule(options: StepScheduleOptions, length: StageLength) -> Callable[[int], float]:
    """gamma ** (milestones passed)."""
    milestones = [length.steps(m) for m in options.milestones]
    return lambda step: options.gamma ** sum(step >= m for m in milestones)


@SCHEDULES.register("poly", options=PolyScheduleOptions)
def poly(options: PolyScheduleOptions, length: StageLength) -> Callable[[int], float]:
    """Polynomial decay to `min_lr_factor` at the end of the stage."""
    low = options.min_lr_factor
    return lambda step: low + (1 - low) * (1 - length.progress(step)) ** options.power


@SCHEDULES.register("cosine", options=CosineScheduleOptions)
def cosine(options: CosineScheduleOptions, length: StageLength) -> Callable[[int], float]:
    """Half-cosine decay to `min_lr_factor` at the end of the stage."""
    low = options.min_lr_factor
    return lambda step: low + (1 - low) * 0.5 * (1 + math.cos(math.pi * length.progress(step)))


def lr_factor_fn(
    cfg: ScheduleOptions | Mapping[str, Any], total_steps: int, steps_per_unit: int = 1
) -> Callable[[int], float]:
    """The lr multiplier as a function of the optimiser step (0-based), warm-up included.

    `steps_per_unit` converts lengths in the stage's unit (e.g. step milestones) to steps.
    """
    options = plugin_options(SCHEDULES, "constant", cfg)
    main = SCHEDULES.get(options.type)(options, StageLength(total_steps, steps_per_unit))
    warmup, start = options.warmup_steps, options.warmup_factor

    def factor(step: int) -> float:
        value = float(main(step))
        if step < warmup:
            alpha = step / warmup
            value *= start * (1 - alpha) + alpha
        return value

    return factor


def build_scheduler(
    optimizer: torch.optim.Optimizer,
    cfg: ScheduleOptions | Mapping[str, Any],
    total_steps: int,
    steps_per_unit: int = 1,
) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-step LambdaLR following `lr_factor_fn` (stepped after every optimiser step)."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lr_factor_fn(cfg, total_steps, steps_per_unit)
    )


# -- stage kinds ---------------------------------------------------------------------------------
class StageKindOptions(PluginOptions):
    """Options of a stage kind (the stage's data, patterns and length are stage fields).

    `trains` (a class attribute, not an option) says whether the kind trains: a stage of a kind
    that does not has no `steps` / `epochs` and leaves the training fields at their defaults.
    """

    trains: ClassVar[bool] = True


class SupervisedOptions(StageKindOptions):
    """A supervised stage: the stage's tasks on its sets, its trainable / frozen patterns.

    `optimizers` splits the trained parameters among several optimisers (each `{params:
    [PATTERN, ...], type, ...options}`; a parameter goes to the first group whose patterns match
    it); the stage's `optimizer` steps the parameters no group takes (and the loss weighting's).
    With several optimisers the stage runs Lightning's manual optimisation: one backward pass,
    then every optimiser steps, each with the stage's schedule; `grad_clip` bounds each
    optimiser's gradient norm.
    """

    optimizers: list[OptimizerGroupOptions] = Field(default_factory=list)


class PerDecoderOptions(StageKindOptions):
    """VTD's per-decoder fine-tuning: each task's decoder alone, then merged into one model."""

    include_support: bool = Field(
        True,
        description="fine-tune the support heads a task owns (e.g. a stream its head reads) "
        "together with its decoder",
    )


@STAGE_KINDS.register("supervised", options=SupervisedOptions)
def supervised(options: SupervisedOptions, request: StageRequest) -> list[Unit]:
    """One unit: the stage as written (with its optimiser groups)."""
    return [request.train(optimizers=options.optimizers)]


@STAGE_KINDS.register("per_decoder", options=PerDecoderOptions)
def per_decoder(options: PerDecoderOptions, request: StageRequest) -> list[Unit]:
    """One unit per task (its decoder trained alone on the sets labelled for it) plus a merge.

    Every sub-stage starts from the stage's start point; the merge takes each task's decoder from
    its sub-stage and everything else from the start point. A task whose decoder has no
    parameters (e.g. MOTS joining other tasks' outputs) has nothing to fine-tune and is skipped.
    """
    plans: list[Unit] = []
    parts: dict[str, str] = {}
    for task in request.tasks:
        prefixes = request.decoder_prefixes(task)
        if not options.include_support:
            prefixes = prefixes[:1]
        if not any(n.startswith(tuple(prefixes)) for n in request.parameter_names):
            continue
        sub = f"{request.name}.{task}"
        plans.append(
            request.train(
                name=sub,
                tasks=[task],
                sets=request.labelled_sets(task),
                trainable=[f"{p}*" for p in prefixes],
                frozen=[],
                where=f"{request.where} ({task})",
            )
        )
        parts[task] = sub
    plans.append(request.merge(parts))
    return plans


class PseudoLabelOptions(StageKindOptions):
    """Label image sets with a teacher; the labels go into the run directory.

    The stage's `tasks` (required) are labelled on its `sets` (default: every set); with
    `skip_labelled` a set is labelled only for the tasks it has no labels of its own for. The
    rules are those of `drivemtl pseudo-label`; the stage's `batch_size` is the number of images
    per forward pass. The stage's weights (what `init: previous` of the next stage starts from)
    are its start point (`init`), unchanged. Later stages add the labels with
    `pseudo_labels: [{stage: NAME}]`.
    """

    trains: ClassVar[bool] = False
    teacher: str = Field(
        "previous",
        description="'previous' (the preceding stage's weights), 'stage:<name>' or a "
        ".safetensors file",
    )
    box_score: float = Field(0.5, ge=0.0, le=1.0, description="keep boxes scoring >= this")
    semantic_confidence: float = Field(
        0.3, ge=0.0, le=1.0, description="semantic pixels below this confidence become ignore"
    )
    drivable_confidence: float = Field(
        0.3, ge=0.0, le=1.0, description="drivable pixels below this confidence become ignore"
    )
    joint_score: float = Field(0.2, ge=0.0, le=1.0, description="drop pose joints below this")
    confidence: dict[str, float] = Field(
        default_factory=dict,
        description="pixel-confidence threshold of other (plug-in) class-map tasks (default 0)",
    )
    skip_labelled: bool = Field(
        True, description="label a set only for the tasks it carries no labels for"
    )


@STAGE_KINDS.register("pseudo_label", options=PseudoLabelOptions)
def pseudo_label(options: PseudoLabelOptions, request: StageRequest) -> list[Unit]:
    """One unit: the teacher labels the stage's sets for its tasks."""
    rules = options.model_dump(
        include={
            "box_score",
            "semantic_confidence",
            "drivable_confidence",
            "joint_score",
            "confidence",
        }
    )
    return [request.label(options.teacher, rules, skip_labelled=options.skip_labelled)]
