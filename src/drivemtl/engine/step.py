"""One multi-task training step without Lightning: per-task losses -> weighting -> finite check.

The Lightning module calls `multitask_step`; tests and other engines can call it directly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from drivemtl.engine.loss_weighting import LossWeighting
from drivemtl.structures.batch import Batch


class LossModel(Protocol):
    """What the engine needs from a model: per-task losses over a batch (MultiTaskNet has it)."""

    def losses(self, batch: Batch, tasks: list[str] | None = None) -> dict[str, Tensor]: ...


@dataclass
class StepOutput:
    """The total loss to back-propagate, the unweighted per-task losses, weights and presence;
    `outputs` are the model's raw outputs when the step was asked to keep them."""

    total: Tensor
    losses: dict[str, Tensor]
    weights: dict[str, float]
    present: dict[str, bool]
    outputs: Any = None

    @property
    def finite(self) -> bool:
        """Whether the total loss is finite (NaN / Inf steps are skipped by the guard)."""
        return bool(torch.isfinite(self.total.detach()).all())


def multitask_step(
    model: LossModel,
    weighting: LossWeighting,
    batch: Batch,
    tasks: list[str],
    keep_outputs: bool = False,
) -> StepOutput:
    """Losses of `tasks` on `batch`, combined by `weighting`; unlabelled tasks count as absent.

    When no task of the batch is labelled (so no loss has a graph), the total is a zero connected
    to the trainable parameters, so every DDP rank still runs a backward pass. `keep_outputs`
    keeps the raw outputs (the model needs `losses_and_outputs`).
    """
    outputs = None
    if keep_outputs:
        losses, outputs = model.losses_and_outputs(batch, tasks)  # type: ignore[attr-defined]
    else:
        losses = model.losses(batch, tasks)
    present = {t: bool(batch.is_labeled(t).any()) for t in tasks}
    weighted = weighting(losses, present)
    total = weighted.total
    if not total.requires_grad and isinstance(model, nn.Module):
        params = [p for p in model.parameters() if p.requires_grad]
        params += [p for p in weighting.parameters() if p.requires_grad]
        if params:
            total = total + sum(p.sum() for p in params) * 0.0
    return StepOutput(
        total=total, losses=losses, weights=weighted.weights, present=present, outputs=outputs
    )
