"""Loss weighting strategies behind one interface: fixed weights, uncertainty weighting, DWA.

Gradient-based balancing (GradNorm, PCGrad, MGDA-UB) lives in `engine.gradient_balancing` and is
registered here on import.

Strategies are `type` + options plug-ins of ``LOSS_WEIGHTINGS``: an entry is registered with its
options model (derived from `LossWeightingOptions`) and called as `entry(options, context)` with a
`WeightingContext` (the stage's tasks, their static weights, sampler epoch length); it returns the
`LossWeighting` module.

Every strategy is an `nn.Module` (its learnable parameters and running statistics live in the
state dict, so a resumed run continues exactly) mapping per-task losses to one total. `present`
says which tasks had labelled samples in the batch: an absent task adds nothing and, for the
adaptive strategies, does not move their statistics.

Two optional hooks serve strategies that look at gradients. `bind(model)` is called once by the
training module before training, so a strategy can look up parameters or modules of the model it
weights (a pattern that matches nothing fails there). A strategy with `needs_task_gradients`
sets the update itself: the module splits the model's trainable parameters into the strategy's
`shared_names` and the rest and calls `combine_gradients`, which back-propagates every task on
its own and returns one gradient per parameter; `forward`'s total is then only logged.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from pydantic import Field
from torch import Tensor, nn

from drivemtl.config.base import PluginField, PluginOptions
from drivemtl.registry import Registry

LOSS_WEIGHTINGS: Registry[Callable[..., LossWeighting]] = Registry("loss weighting")


class LossWeightingOptions(PluginOptions):
    """What every strategy takes: static per-task weights for this stage.

    `weights` override `model.tasks.<task>.loss_weight`; the resolved weight of every task reaches
    the strategy as `WeightingContext.weights` (the fixed strategy uses them as its weights).
    """

    weights: dict[str, float] = Field(default_factory=dict)


class UncertaintyOptions(LossWeightingOptions):
    """Uncertainty weighting: the initial log variance of every task."""

    init_log_variance: float = Field(0.0, description="initial s_t = log sigma_t^2")


class DWAOptions(LossWeightingOptions):
    """Dynamic Weight Average: softmax temperature and averaging window."""

    temperature: float = Field(2.0, gt=0.0, description="softmax temperature")
    window: int = Field(0, ge=0, description="steps per loss-averaging window (0 = one epoch)")


@dataclass(frozen=True)
class WeightingContext:
    """What a strategy is built for: the stage's tasks, each task's static weight (stage
    `weights`, else the model's loss weight, else 1) and the sampler's batches per epoch."""

    tasks: list[str]
    weights: dict[str, float]
    steps_per_epoch: int


@dataclass
class WeightedLoss:
    """The total loss and the weight each task's loss received (for logging)."""

    total: Tensor
    weights: dict[str, float]


@dataclass
class CombinedGradients:
    """What `combine_gradients` makes of one step: a gradient per parameter, in the order
    `shared + specific` were given (None: no task reached it, leave `.grad` alone), and the
    weight each task's gradient received (for logging)."""

    grads: list[Tensor | None]
    weights: dict[str, float]


class LossWeighting(nn.Module):
    """Base class: `forward(losses, present)` -> WeightedLoss over a fixed ordered task list.

    `needs_task_gradients` (a class attribute; an instance may override it) says the strategy
    computes the update itself through `combine_gradients`; `shared_names` are then the names of
    the model's parameters it treats as shared (set by `bind`).
    """

    needs_task_gradients: bool = False
    shared_names: frozenset[str] = frozenset()

    def __init__(self, tasks: list[str]) -> None:
        super().__init__()
        if not tasks:
            raise ValueError("loss weighting needs at least one task")
        self.tasks = list(tasks)

    def _check(self, losses: Mapping[str, Tensor]) -> None:
        unknown = sorted(set(losses) - set(self.tasks))
        if unknown:
            raise KeyError(f"losses for tasks {unknown} not in the weighted tasks {self.tasks}")

    def _present(self, losses: Mapping[str, Tensor], present: Mapping[str, bool] | None):
        return [t for t in self.tasks if t in losses and (present is None or present.get(t, True))]

    def forward(  # pragma: no cover - abstract
        self, losses: Mapping[str, Tensor], present: Mapping[str, bool] | None = None
    ) -> WeightedLoss:
        raise NotImplementedError

    def bind(self, model: nn.Module) -> None:
        """Look up what the strategy needs in the model it weights (once, before training)."""

    def combine_gradients(
        self,
        losses: Mapping[str, Tensor],
        present: Mapping[str, bool] | None,
        shared: Sequence[Tensor],
        specific: Sequence[Tensor],
    ) -> CombinedGradients:
        """The update of `shared` and `specific` parameters from per-task backward passes.

        Only called when `needs_task_gradients` is true; tasks absent from the batch take no part.
        """
        raise NotImplementedError(f"{type(self).__name__} does not combine task gradients")


def weighted_sum(losses: Mapping[str, Tensor], weights: Mapping[str, float]) -> Tensor:
    """sum_t w_t L_t over the tasks of `weights` that have a loss (in `weights` order)."""
    total = _zero_like(losses)
    for task, weight in weights.items():
        if task in losses:
            total = total + weight * losses[task]
    return total


def _zero_like(losses: Mapping[str, Tensor]) -> Tensor:
    """A zero total that stays connected to the graph of the (zero) task losses."""
    values = list(losses.values())
    if not values:
        return torch.zeros(())
    return sum(v * 0.0 for v in values)  # type: ignore[return-value]


class FixedWeighting(LossWeighting):
    """Sum of w_t * L_t with constant weights (the papers' hand-tuned grids)."""

    def __init__(self, tasks: list[str], weights: Mapping[str, float]) -> None:
        super().__init__(tasks)
        missing = [t for t in tasks if t not in weights]
        if missing:
            raise KeyError(f"fixed loss weighting: no weight for tasks {missing}")
        self.weights = {t: float(weights[t]) for t in tasks}

    def forward(
        self, losses: Mapping[str, Tensor], present: Mapping[str, bool] | None = None
    ) -> WeightedLoss:
        """Weighted sum over all given losses (an unlabelled task's loss is already zero)."""
        self._check(losses)
        return WeightedLoss(weighted_sum(losses, self.weights), dict(self.weights))


class UncertaintyWeighting(LossWeighting):
    """Homoscedastic uncertainty weighting (Kendall et al., CVPR 2018).

    L = sum_t exp(-s_t) * L_t + s_t with learnable s_t = log sigma_t^2 (the paper's regression form
    times two; the same optimum). Only tasks labelled in the batch contribute, so s_t of a task
    without data is not pushed down by its regulariser alone.
    """

    def __init__(self, tasks: list[str], init_log_variance: float = 0.0) -> None:
        super().__init__(tasks)
        self.log_variance = nn.Parameter(torch.full((len(tasks),), float(init_log_variance)))

    def forward(
        self, losses: Mapping[str, Tensor], present: Mapping[str, bool] | None = None
    ) -> WeightedLoss:
        """exp(-s_t) L_t + s_t summed over the tasks present in the batch."""
        self._check(losses)
        total = _zero_like(losses) + 0.0 * self.log_variance.sum()
        active = set(self._present(losses, present))
        weights = {}
        for i, task in enumerate(self.tasks):
            s = self.log_variance[i]
            weights[task] = float(torch.exp(-s.detach()))
            if task in active:
                total = total + torch.exp(-s) * losses[task] + s
        return WeightedLoss(total, weights)


class DynamicWeightAverage(LossWeighting):
    """Dynamic Weight Average (Liu et al., CVPR 2019): w_t = T softmax_t(r_t / tau).

    r_t = Lbar_t(k-1) / Lbar_t(k-2), the ratio of a task's mean loss over the last two completed
    windows (a window is `window` optimiser steps, one epoch in the paper); weights are 1 until two
    windows are complete. Means count only steps where the task was labelled.
    """

    def __init__(self, tasks: list[str], window: int, temperature: float = 2.0) -> None:
        super().__init__(tasks)
        if window <= 0:
            raise ValueError(f"DWA window must be positive, got {window}")
        self.window = int(window)
        self.temperature = float(temperature)
        n = len(tasks)
        self.register_buffer("window_sum", torch.zeros(n, dtype=torch.float64))
        self.register_buffer("window_count", torch.zeros(n, dtype=torch.float64))
        self.register_buffer("history", torch.zeros(2, n, dtype=torch.float64))  # [k-2, k-1]
        self.register_buffer("windows_done", torch.zeros((), dtype=torch.int64))
        self.register_buffer("steps_in_window", torch.zeros((), dtype=torch.int64))

    def current_weights(self) -> Tensor:
        """[T] weights used for the current window (float64)."""
        n = len(self.tasks)
        if int(self.windows_done) < 2:
            return torch.ones(n, dtype=torch.float64, device=self.history.device)
        previous = self.history[0]
        ratio = torch.where(
            previous > 0, self.history[1] / previous.clamp_min(1e-12), torch.ones_like(previous)
        )
        return n * torch.softmax(ratio / self.temperature, dim=0)

    def forward(
        self, losses: Mapping[str, Tensor], present: Mapping[str, bool] | None = None
    ) -> WeightedLoss:
        """Weighted sum with the current window's weights; in training, update the statistics."""
        self._check(losses)
        weights = self.current_weights()
        total = _zero_like(losses)
        for i, task in enumerate(self.tasks):
            if task in losses:
                total = total + float(weights[i]) * losses[task]
        if self.training:
            self._observe(losses, set(self._present(losses, present)))
        return WeightedLoss(total, {t: float(w) for t, w in zip(self.tasks, weights, strict=True)})

    @torch.no_grad()
    def _observe(self, losses: Mapping[str, Tensor], active: set[str]) -> None:
        for i, task in enumerate(self.tasks):
            if task in active:
                self.window_sum[i] += float(losses[task].detach())
                self.window_count[i] += 1
        self.steps_in_window += 1
        if int(self.steps_in_window) >= self.window:
            mean = self.window_sum / self.window_count.clamp_min(1)
            # a task unseen in this window keeps its previous mean (ratio 1 rather than 0 / x)
            mean = torch.where(self.window_count > 0, mean, self.history[1])
            self.history[0] = self.history[1] if int(self.windows_done) > 0 else mean
            self.history[1] = mean
            self.windows_done += 1
            self.window_sum.zero_()
            self.window_count.zero_()
            self.steps_in_window.zero_()


@LOSS_WEIGHTINGS.register("fixed", options=LossWeightingOptions)
def fixed(options: LossWeightingOptions, context: WeightingContext) -> FixedWeighting:
    """Constant weights: the context's static weight of every task."""
    return FixedWeighting(context.tasks, context.weights)


@LOSS_WEIGHTINGS.register("uncertainty", options=UncertaintyOptions)
def uncertainty(options: UncertaintyOptions, context: WeightingContext) -> UncertaintyWeighting:
    """Learned homoscedastic-uncertainty weights."""
    return UncertaintyWeighting(context.tasks, options.init_log_variance)


@LOSS_WEIGHTINGS.register("dwa", options=DWAOptions)
def dwa(options: DWAOptions, context: WeightingContext) -> DynamicWeightAverage:
    """Dynamic Weight Average over windows of `window` steps (default: one sampler epoch)."""
    window = options.window or max(1, context.steps_per_epoch)
    return DynamicWeightAverage(context.tasks, window, options.temperature)


def build_loss_weighting(
    cfg: LossWeightingOptions | Mapping[str, Any],
    tasks: list[str],
    default_weights: Mapping[str, float],
    steps_per_epoch: int,
) -> LossWeighting:
    """The strategy `cfg` names, for `tasks`; static weights fall back to `default_weights`."""
    options = PluginField(LOSS_WEIGHTINGS, "fixed").validate(cfg)
    unknown = sorted(set(options.weights) - set(tasks))
    if unknown:
        raise KeyError(
            f"loss_weighting.weights names tasks {unknown} that the stage does not train ({tasks})"
        )
    weights = {t: float(options.weights.get(t, default_weights.get(t, 1.0))) for t in tasks}
    context = WeightingContext(list(tasks), weights, int(steps_per_epoch))
    weighting = LOSS_WEIGHTINGS.get(options.type)(options, context)
    if not isinstance(weighting, LossWeighting):
        raise TypeError(
            f"loss weighting '{options.type}' built a {type(weighting).__name__}, "
            "not a LossWeighting"
        )
    return weighting


# the gradient-based strategies register themselves in LOSS_WEIGHTINGS (import at the end: they
# derive from the classes above)
from drivemtl.engine import gradient_balancing as _gradient_balancing  # noqa: E402, F401
