"""The LightningModule of one training stage: multi-task step, NaN guard, exact-resume state.

It wraps a model with `losses(batch, tasks)` (MultiTaskNet) and a loss weighting strategy; the
multi-task logic itself lives in `engine.step`, `engine.stages` and `engine.loss_weighting`.

A stage with one optimiser uses Lightning's automatic optimisation. A stage with several
(`StageSettings.optimizer_groups`) uses manual optimisation (`automatic_optimization = False`):
`training_step` backpropagates the weighted loss once (`manual_step`), clips each optimiser's
gradients, steps every optimiser and its lr schedule; with one group per part and the same
optimiser everywhere this is bit-identical to automatic optimisation.

A loss weighting with `needs_task_gradients` (PCGrad, MGDA on parameters) sets the update itself:
`training_step` hands it the per-task losses with the model's trainable parameters split into its
`shared_names` and the rest, and back-propagates, in place of the weighted total, a surrogate
sum_p <p, g_p> whose gradient is exactly the combined one (so precision, clipping and DDP's
averaging stay Lightning's business under either optimisation mode).
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field, replace
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from drivemtl.engine.gradient_balancing import gradient_surrogate
from drivemtl.engine.loss_weighting import LossWeighting
from drivemtl.engine.nan_guard import NanGuard
from drivemtl.engine.stages import (
    OptimizerGroup,
    OptimizerOptions,
    ScheduleOptions,
    build_optimizer,
    build_scheduler,
    freeze_norm_statistics,
    no_decay_names,
)
from drivemtl.engine.step import StepOutput, multitask_step
from drivemtl.structures.batch import Batch

STATE_KEY = "drivemtl"


@dataclass
class StageSettings:
    """What the module needs to know about its stage.

    With `optimizer_groups`, each group gets its own optimiser and `optimizer` steps the
    trainable parameters no group names (manual optimisation; `grad_clip` is then applied by the
    module, per optimiser, instead of by the Lightning Trainer).
    """

    name: str
    tasks: list[str]
    optimizer: OptimizerOptions
    schedule: ScheduleOptions
    total_steps: int
    steps_per_unit: int = 1
    max_nonfinite_steps: int = 5
    optimizer_groups: list[OptimizerGroup] = field(default_factory=list)
    grad_clip: float | None = None


def _rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()  # noqa: NPY002 (global state on purpose)
    return {
        "torch": torch.get_rng_state(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
        "python": list(random.getstate()[1]),
        "python_gauss": random.getstate()[2],
    }


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))  # noqa: NPY002 (global state on purpose)
    random.setstate((3, tuple(state["python"]), state["python_gauss"]))


class MultiTaskModule(L.LightningModule):
    """Trains `model` on a stage's tasks; logs per-task losses, weights, lr and images/s.

    The checkpoint carries, besides weights and optimiser state, the NaN-guard counters, the
    number of batches consumed in the stage and the random states, so a resumed stage continues
    bit-exactly (see `engine.trainer`).
    """

    def __init__(self, model: nn.Module, weighting: LossWeighting, settings: StageSettings) -> None:
        super().__init__()
        self.model = model
        self.weighting = weighting
        weighting.bind(model)
        self.settings = settings
        self.guard = NanGuard(settings.max_nonfinite_steps)
        self.batches_consumed = 0
        self._restored_rng: dict[str, Any] | None = None
        self._last_batch_time: float | None = None
        self.automatic_optimization = not settings.optimizer_groups

    # -- training -------------------------------------------------------------------------------
    def train(self, mode: bool = True) -> MultiTaskModule:
        """Switch mode; frozen normalisation layers stay in eval (their statistics stay fixed)."""
        super().train(mode)
        if mode:
            freeze_norm_statistics(self.model)
        return self

    def on_train_start(self) -> None:
        """Enter train mode (frozen norms in eval) and restore a resumed run's random states."""
        self.train()
        if self._restored_rng is not None:
            _set_rng_state(self._restored_rng)
            self._restored_rng = None

    def on_train_batch_start(self, batch: Batch, batch_idx: int) -> None:
        """Count consumed batches (batch_idx continues across a resume)."""
        self.batches_consumed = batch_idx + 1

    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor | None:
        """Weighted multi-task loss; None (step skipped) when it is NaN / Inf on any rank."""
        out = multitask_step(self.model, self.weighting, batch, self.settings.tasks)
        loss, finite = out.total, out.finite
        if self.weighting.needs_task_gradients and finite:
            out, loss = self.task_gradient_loss(out)
            finite = bool(torch.isfinite(loss.detach()))
        nonfinite = torch.tensor(0.0 if finite else 1.0, device=out.total.device)
        if dist.is_available() and dist.is_initialized() and self.trainer.world_size > 1:
            dist.all_reduce(nonfinite, op=dist.ReduceOp.MAX)
        if float(nonfinite) > 0:
            self.guard.record_nonfinite(out.losses, self.global_step, self.settings.name)
            self.log("train/skipped_steps", float(self.guard.skipped_total), sync_dist=False)
            return None
        self.guard.consecutive = 0
        self.log_step(out, len(batch))
        if not self.automatic_optimization:
            self.manual_step(out, loss)
            return out.total.detach()
        return loss

    def log_step(self, out: StepOutput, batch_size: int, **extra: dict[str, Any]) -> None:
        """The total (progress bar, every step); per-task losses, weights and `extra` groups
        (name -> {task: value}) only on the steps Lightning writes to the logs: each `log` call
        costs ~0.7 ms, and the values of the other steps would be dropped anyway."""
        self.log("loss/total", out.total.detach(), prog_bar=True, batch_size=batch_size)
        if not self._writes_logs():
            return
        groups: dict[str, dict[str, Any]] = {
            "loss": {t: v for t, v in out.losses.items() if out.present[t]},
            "weight": out.weights,
            **extra,
        }
        for prefix, values in groups.items():
            for task, value in values.items():
                value = value.detach() if isinstance(value, torch.Tensor) else value
                self.log(f"{prefix}/{task}", value, batch_size=batch_size)

    def _writes_logs(self) -> bool:
        """Whether Lightning writes this step's logged values (True where it cannot say)."""
        connector = getattr(self._trainer, "_logger_connector", None) if self._trainer else None
        return bool(getattr(connector, "should_update_logs", True))

    def task_gradient_loss(self, out: StepOutput) -> tuple[StepOutput, torch.Tensor]:
        """The weighting's combined gradient as a surrogate loss, and the weights it logged.

        Without any gradient (no task labelled) the step's own total stays the loss.
        """
        names = self.weighting.shared_names
        trainable = [(n, p) for n, p in self.model.named_parameters() if p.requires_grad]
        shared = [p for n, p in trainable if n in names]
        specific = [p for n, p in trainable if n not in names]
        combined = self.weighting.combine_gradients(out.losses, out.present, shared, specific)
        pairs = [(p, g) for p, g in zip([*shared, *specific], combined.grads, strict=True)]
        pairs = [(p, g) for p, g in pairs if g is not None]
        out = replace(out, weights=combined.weights)
        if not pairs:
            return out, out.total
        params, grads = zip(*pairs, strict=True)
        return out, gradient_surrogate(params, grads)

    def manual_step(self, out: StepOutput, loss: torch.Tensor | None = None) -> None:
        """One update under manual optimisation: backward once (`loss`, default the step's
        total), clip, step every optimiser and its schedule."""
        self.backward_and_step(self._optimizer_list(), out.total if loss is None else loss)
        self.step_schedules()

    def backward_and_step(self, optimizers: list[Any], loss: torch.Tensor) -> None:
        """Zero `optimizers`, backward `loss` once, then clip (`grad_clip`) and step each."""
        for optimizer in optimizers:
            optimizer.zero_grad()
        self.manual_backward(loss)
        for optimizer in optimizers:
            if self.settings.grad_clip is not None:
                self.clip_gradients(
                    optimizer,
                    gradient_clip_val=self.settings.grad_clip,
                    gradient_clip_algorithm="norm",
                )
            optimizer.step()

    def step_schedules(self) -> None:
        """Advance every optimiser's lr schedule by one step."""
        schedulers = self.lr_schedulers()
        for scheduler in schedulers if isinstance(schedulers, list) else [schedulers]:
            scheduler.step()  # type: ignore[union-attr]

    def _optimizer_list(self) -> list[Any]:
        optimizers = self.optimizers()
        return list(optimizers) if isinstance(optimizers, list | tuple) else [optimizers]

    @property
    def optimizer_steps(self) -> int:
        """Updates made so far (Lightning counts every optimiser's step in `global_step`)."""
        if self.automatic_optimization:
            return int(self.trainer.global_step)
        return int(self.trainer.global_step) // max(1, len(self._optimizer_list()))

    def on_train_batch_end(self, outputs: Any, batch: Batch, batch_idx: int) -> None:
        """Log throughput (images/s over all ranks, data loading included)."""
        now = time.perf_counter()
        if self._last_batch_time is not None:
            elapsed = max(now - self._last_batch_time, 1e-9)
            rate = len(batch) * self.trainer.world_size / elapsed
            self.log("images_per_s", rate, prog_bar=True, batch_size=len(batch))
        self._last_batch_time = now

    @property
    def optimizer_count(self) -> int:
        """An upper bound of the optimisers the stage steps (the stage's own may step none)."""
        return len(self.settings.optimizer_groups) + 1

    def configure_optimizers(self) -> Any:
        """The stage's optimiser(s) over trainable parameters, each with a per-step lr schedule."""
        optimizers = self.model_optimizers()
        if self.automatic_optimization:
            return {"optimizer": optimizers[0], "lr_scheduler": self._schedule(optimizers[0])}
        return optimizers, [self._schedule(optimizer) for optimizer in optimizers]

    def model_optimizers(self) -> list[torch.optim.Optimizer]:
        """The optimisers of the model's (and the weighting's) trainable parameters: one, or
        one per optimiser group plus the stage's for the rest."""
        named = [(f"model.{n}", p) for n, p in self.model.named_parameters()]
        named += [(f"weighting.{n}", p) for n, p in self.weighting.named_parameters()]
        exempt = {f"model.{n}" for n in no_decay_names(self.model)}
        if not self.settings.optimizer_groups:
            return [build_optimizer(named, self.settings.optimizer, exempt)]
        optimizers = []
        taken: set[str] = set()
        for group in self.settings.optimizer_groups:
            names = {f"model.{n}" for n in group.names}
            params = [(n, p) for n, p in named if n in names]
            optimizers.append(build_optimizer(params, group.options, exempt))
            taken |= names
        rest = [(n, p) for n, p in named if n not in taken and p.requires_grad]
        if rest:
            optimizers.append(build_optimizer(rest, self.settings.optimizer, exempt))
        return optimizers

    def _schedule(self, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
        scheduler = build_scheduler(
            optimizer,
            self.settings.schedule,
            self.settings.total_steps,
            self.settings.steps_per_unit,
        )
        return {"scheduler": scheduler, "interval": "step", "frequency": 1}

    # -- checkpoint state --------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Add stage name, consumed batches, NaN-guard counters and random states."""
        checkpoint[STATE_KEY] = {
            "stage": self.settings.name,
            "batches_consumed": self.batches_consumed,
            "nan_guard": self.guard.state_dict(),
            "rng": _rng_state(),
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Restore what `on_save_checkpoint` added (random states are applied at train start)."""
        state = checkpoint.get(STATE_KEY)
        if state is None:
            raise ValueError("checkpoint was not written by the DriveMTL engine")
        if state["stage"] != self.settings.name:
            raise ValueError(
                f"checkpoint belongs to stage '{state['stage']}', not '{self.settings.name}'"
            )
        self.batches_consumed = int(state["batches_consumed"])
        self.guard.load_state_dict(state["nan_guard"])
        self._restored_rng = state["rng"]
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer else None
        if datamodule is not None and hasattr(datamodule, "resume_from"):
            datamodule.resume_from(self.batches_consumed)
