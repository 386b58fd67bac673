"""Freezing by glob patterns (validated), optimiser and learning-rate schedule builders."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from fnmatch import fnmatchcase

import torch
from torch import nn

from drivemtl.engine.config import OptimizerConfig, ScheduleConfig
from drivemtl.errors import DriveMTLError

_NORM_TYPES = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)


class FreezeError(DriveMTLError):
    """A trainable / frozen pattern matches nothing, or freezing leaves nothing to train."""


@dataclass(frozen=True)
class FreezePlan:
    """Which parameters a stage trains and which it keeps fixed (names in `named_parameters`)."""

    trainable: tuple[str, ...]
    frozen: tuple[str, ...]


def _matches(name: str, patterns: list[str]) -> bool:
    return any(fnmatchcase(name, p) for p in patterns)


def plan_freezing(
    names: list[str], trainable: list[str], frozen: list[str], where: str = "stage"
) -> FreezePlan:
    """Split parameter names into trained / frozen; every pattern must do what it claims.

    A `trainable` pattern that matches no parameter, or a `frozen` pattern that matches no
    parameter the `trainable` patterns select, is an error, and so is a plan that trains nothing.
    """
    for pattern in trainable:
        if not any(fnmatchcase(n, pattern) for n in names):
            raise FreezeError(
                f"{where}: trainable pattern '{pattern}' matches no parameter "
                f"(parameters start with: {_prefix_summary(names)})"
            )
    selected = [n for n in names if _matches(n, trainable)]
    for pattern in frozen:
        if not any(fnmatchcase(n, pattern) for n in selected):
            raise FreezeError(
                f"{where}: frozen pattern '{pattern}' freezes no parameter that the trainable "
                f"patterns {trainable} select (parameters start with: {_prefix_summary(names)})"
            )
    train = tuple(n for n in selected if not _matches(n, frozen))
    if not train:
        raise FreezeError(f"{where}: trainable {trainable} minus frozen {frozen} leaves nothing")
    keep = set(train)
    return FreezePlan(trainable=train, frozen=tuple(n for n in names if n not in keep))


def _prefix_summary(names: list[str]) -> str:
    prefixes = sorted({".".join(n.split(".")[:2]) for n in names})
    text = ", ".join(prefixes[:12])
    return text + (", ..." if len(prefixes) > 12 else "")


def apply_freezing(model: nn.Module, plan: FreezePlan) -> None:
    """Set `requires_grad` of every parameter of `model` according to `plan`."""
    keep = set(plan.trainable)
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


def build_optimizer(
    named_params: list[tuple[str, nn.Parameter]],
    cfg: OptimizerConfig,
    norm_and_bias_names: set[str] | None = None,
) -> torch.optim.Optimizer:
    """AdamW or SGD over the trainable parameters; biases and norm weights get no weight decay.

    `norm_and_bias_names` lists the parameters exempt from decay (see `no_decay_names`).
    """
    params = [(n, p) for n, p in named_params if p.requires_grad]
    if not params:
        raise FreezeError("no trainable parameter to optimise")
    exempt = set() if cfg.decay_norm_and_bias else (norm_and_bias_names or set())
    decay = [p for n, p in params if n not in exempt]
    no_decay = [p for n, p in params if n in exempt]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    if cfg.name == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas)
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov)


def no_decay_names(model: nn.Module) -> set[str]:
    """Names of biases and normalisation-layer parameters (conventionally exempt from decay)."""
    names = set()
    for module_name, module in model.named_modules():
        for param_name, _ in module.named_parameters(recurse=False):
            full = f"{module_name}.{param_name}" if module_name else param_name
            if param_name == "bias" or isinstance(module, _NORM_TYPES):
                names.add(full)
    return names


def lr_factor_fn(
    cfg: ScheduleConfig, total_steps: int, steps_per_unit: int = 1
) -> Callable[[int], float]:
    """The lr multiplier as a function of the optimiser step (0-based), warm-up included.

    `steps_per_unit` converts step-schedule milestones from the stage's length unit to steps.
    """
    milestones = [round(m * steps_per_unit) for m in cfg.milestones]
    total = max(1, total_steps)

    def main(step: int) -> float:
        if cfg.name == "constant":
            return 1.0
        if cfg.name == "step":
            return cfg.gamma ** sum(step >= m for m in milestones)
        progress = min(step, total) / total
        if cfg.name == "poly":
            return cfg.min_lr_factor + (1 - cfg.min_lr_factor) * (1 - progress) ** cfg.power
        cosine = 0.5 * (1 + math.cos(math.pi * progress))
        return cfg.min_lr_factor + (1 - cfg.min_lr_factor) * cosine

    def factor(step: int) -> float:
        value = main(step)
        if step < cfg.warmup_steps:
            alpha = step / cfg.warmup_steps
            value *= cfg.warmup_factor * (1 - alpha) + alpha
        return value

    return factor


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: ScheduleConfig, total_steps: int, steps_per_unit: int = 1
) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-step LambdaLR following `lr_factor_fn` (stepped after every optimiser step)."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lr_factor_fn(cfg, total_steps, steps_per_unit)
    )
