"""Gradient-based task balancing: GradNorm, PCGrad and MGDA-UB (entries of ``LOSS_WEIGHTINGS``).

- `gradnorm` (Chen et al., ICML 2018) learns task weights w_t so that the gradient norms
  G_t = |grad_W w_t L_t| of a shared layer W follow Gbar * r_t^alpha (r_t: the task's loss ratio
  L_t / L_t(0) relative to the mean ratio). The weights take one plain gradient step of size `lr`
  on L_grad = sum_t |G_t - Gbar r_t^alpha| per training step (targets held constant) and are then
  renormalised to sum to the number of tasks. W defaults to the last weight matrix / kernel of the
  backbone, the deepest layer every task of a MultiTaskNet reaches (a head may read C5 directly).
- `pcgrad` (Yu et al., NeurIPS 2020) back-propagates every task on its own; each task's gradient
  of the shared parameters is projected onto the normal plane of every other task's gradient it
  conflicts with (negative dot product), the others taken in random order; the projected gradients
  are summed. Task-specific parameters get the plain sum. The order comes from a generator seeded
  by (`seed`, step count), the count being a buffer, so a resumed run draws the same orders.
- `mgda_ub` (Sener & Koltun, NeurIPS 2018) finds the min-norm convex combination alpha of the task
  gradients (closed form for two tasks, Frank-Wolfe otherwise). With `gradients: representation`
  (the paper's MGDA-UB) the gradients are those of the outputs of the shared `representation`
  modules (captured by forward hooks; all their output tensors, e.g. C2..C5 and the pyramid,
  concatenated), and the network back-propagates sum_t alpha_t L_t once;
  with `gradients: parameters` (plain MGDA, one backward pass per task) they are those of the
  shared parameters, which get sum_t alpha_t g_t, the task-specific parameters the plain sum.

All three use each task's statically weighted loss w_t L_t (stage `weights`, else the model's
loss weight, else 1). Shared parameters default to the model's backbone, neck, adapter, group,
interaction and exchange stages; `shared` / `layer` take globs or `@KIND` patterns instead.
Under DDP each rank balances its own gradients; DDP then averages the results.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field, model_validator
from torch import Tensor, nn

from drivemtl.engine.loss_weighting import (
    LOSS_WEIGHTINGS,
    CombinedGradients,
    LossWeighting,
    LossWeightingOptions,
    WeightedLoss,
    WeightingContext,
    _zero_like,
    weighted_sum,
)
from drivemtl.engine.stages import matching
from drivemtl.errors import DriveMTLError

SHARED_KINDS = ("backbone", "neck", "adapter", "group", "interaction", "exchange")
MIN_WEIGHT = 1e-4  # GradNorm weights stay positive (before renormalisation)


# -- options ----------------------------------------------------------------------------------------
class GradNormOptions(LossWeightingOptions):
    """GradNorm: restoring-force exponent, step size of the weights, the shared layer."""

    alpha: float = Field(1.5, ge=0.0, description="asymmetry: how hard slow tasks are pushed")
    lr: float = Field(0.025, gt=0.0, description="step size of the task weights' own update")
    layer: str | None = Field(
        None, description="glob / @KIND of the shared layer's parameters (default: last backbone)"
    )


class PCGradOptions(LossWeightingOptions):
    """PCGrad: which parameters are shared and the seed of the projection order."""

    shared: list[str] | None = Field(None, description="globs / @KIND of the shared parameters")
    seed: int = Field(0, ge=0, lt=2**31, description="seed of the random projection order")


class MGDAOptions(LossWeightingOptions):
    """MGDA-UB: gradients of the shared representation or parameters, and their normalisation."""

    gradients: Literal["representation", "parameters"] = "representation"
    representation: list[str] = Field(
        default_factory=lambda: ["backbone", "neck"],
        description="modules whose outputs are the shared representation (representation mode)",
    )
    shared: list[str] | None = Field(
        None, description="globs / @KIND of the shared parameters (parameters mode)"
    )
    normalize: Literal["none", "l2", "loss", "loss+"] = Field(
        "none", description="divide each gradient by its norm, loss or both before solving"
    )

    @model_validator(mode="after")
    def _options_of_the_mode(self) -> MGDAOptions:
        """`shared` belongs to parameters mode; an empty representation is a mistake."""
        if self.gradients == "representation" and self.shared is not None:
            raise ValueError("`shared` is used with `gradients: parameters` only")
        if self.gradients == "representation" and not self.representation:
            raise ValueError("`representation` names no module")
        return self


# -- parameters of the model ------------------------------------------------------------------------
def _aliases(model: nn.Module) -> dict[str, list[str]]:
    """`@KIND` -> globs of that kind's stages (`MultiTaskNet.stage_prefixes`; none otherwise)."""
    stage_prefixes = getattr(model, "stage_prefixes", None)
    if stage_prefixes is None:
        return {}
    return {f"@{kind}": [f"{p}*" for p in prefixes] for kind, prefixes in stage_prefixes().items()}


def _trainable(model: nn.Module) -> list[str]:
    """Names of the parameters this stage trains (frozen ones cannot be balanced)."""
    return [n for n, p in model.named_parameters() if p.requires_grad]


def select_parameters(model: nn.Module, patterns: Sequence[str], where: str) -> list[str]:
    """Names of the trainable parameters matching `patterns`; a pattern matching none is an error."""
    names, aliases = _trainable(model), _aliases(model)
    for pattern in patterns:
        if not matching(names, [pattern], aliases):
            examples = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
            raise DriveMTLError(
                f"{where}: pattern '{pattern}' matches no trainable parameter of the model "
                f"(trainable: {examples or 'none'})"
            )
    return matching(names, patterns, aliases)


def default_shared(model: nn.Module, where: str) -> list[str]:
    """The trainable parameters of the model's shared stages (backbone, neck, adapters, ...)."""
    aliases = _aliases(model)
    if not aliases:
        raise DriveMTLError(f"{where}: the model reports no stages; name the shared parameters")
    names = matching(_trainable(model), [f"@{k}" for k in SHARED_KINDS], aliases)
    if not names:
        raise DriveMTLError(f"{where}: this stage trains no shared parameter (backbone, neck, ...)")
    return names


def last_backbone_layer(model: nn.Module, where: str) -> list[str]:
    """The backbone's last trainable weight with two or more dimensions (registration order)."""
    params = dict(model.named_parameters())
    names = matching(_trainable(model), ["@backbone"], _aliases(model))
    weights = [n for n in names if params[n].ndim >= 2]
    if not weights:
        raise DriveMTLError(
            f"{where}: the model has no trainable backbone weight in this stage; "
            "name the shared layer with `layer`"
        )
    return weights[-1:]


# -- gradient algebra -------------------------------------------------------------------------------
def _active(
    losses: Mapping[str, Tensor], present: Mapping[str, bool] | None, tasks: list[str]
) -> list[str]:
    """Tasks labelled in the batch whose loss has a graph (the ones that can be balanced)."""
    return [
        t
        for t in tasks
        if t in losses and (present is None or present.get(t, True)) and losses[t].requires_grad
    ]


def _flatten(grads: Sequence[Tensor | None], like: Sequence[Tensor]) -> Tensor:
    """One vector of `grads` (zeros where a tensor got no gradient)."""
    pairs = zip(grads, like, strict=True)
    parts = [(g if g is not None else torch.zeros_like(x)).reshape(-1) for g, x in pairs]
    return torch.cat(parts) if parts else torch.zeros(0)


def _unflatten(flat: Tensor, like: Sequence[Tensor]) -> list[Tensor]:
    """`flat` cut back into tensors shaped like `like`."""
    out, start = [], 0
    for x in like:
        out.append(flat[start : start + x.numel()].view_as(x))
        start += x.numel()
    return out


def task_gradients(
    losses: Sequence[Tensor], inputs: Sequence[Tensor], keep_graph: bool = False
) -> list[tuple[Tensor | None, ...]]:
    """Gradient of each loss w.r.t. `inputs`, one backward pass each; the graph is freed after
    the last one unless `keep_graph` (the real backward pass still needs it)."""
    out = []
    for i, loss in enumerate(losses):
        retain = keep_graph or i < len(losses) - 1
        out.append(torch.autograd.grad(loss, list(inputs), retain_graph=retain, allow_unused=True))
    return out


def project_conflicts(grads: Sequence[Tensor], orders: Sequence[Sequence[int]]) -> Tensor:
    """PCGrad: sum_i of g_i projected, in `orders[i]`, away from each g_j it conflicts with."""
    total = torch.zeros_like(grads[0])
    for i, order in enumerate(orders):
        g = grads[i].clone()
        for j in order:
            other = grads[j]
            dot, norm2 = torch.dot(g, other), torch.dot(other, other)
            coef = torch.where(norm2 > 0, dot.clamp(max=0.0) / norm2.clamp_min(1e-30), 0.0)
            g = g - coef * other
        total = total + g
    return total


def _segment_weight(xx: Tensor, xy: Tensor, yy: Tensor) -> Tensor:
    """gamma in [0, 1] minimising |gamma x + (1 - gamma) y|^2 given the dot products."""
    denominator = xx - 2 * xy + yy
    if float(denominator) <= 0.0:  # x == y: any point; keep x
        return torch.ones_like(xx)
    return ((yy - xy) / denominator).clamp(0.0, 1.0)


def min_norm_weights(gram: Tensor, iterations: int = 250, tol: float = 1e-10) -> Tensor:
    """alpha on the simplex minimising alpha^T gram alpha (two tasks: closed form; else Frank-Wolfe
    started from the best pair)."""
    n = gram.shape[0]
    if n == 1 or not bool(torch.isfinite(gram).all()):
        return torch.full((n,), 1.0 / n, dtype=gram.dtype)
    alpha = _best_pair(gram)
    for _ in range(iterations if n > 2 else 0):
        g_alpha = gram @ alpha
        t = int(torch.argmin(g_alpha))
        gamma = _segment_weight(alpha @ g_alpha, g_alpha[t], gram[t, t])
        vertex = torch.zeros_like(alpha)
        vertex[t] = 1.0
        new = gamma * alpha + (1 - gamma) * vertex
        if float((new - alpha).abs().sum()) < tol:
            return new
        alpha = new
    return alpha


def _best_pair(gram: Tensor) -> Tensor:
    """The min-norm point over all segments between two task gradients (as simplex weights)."""
    n = gram.shape[0]
    best, best_norm = None, float("inf")
    for i in range(n):
        for j in range(i + 1, n):
            gamma = _segment_weight(gram[i, i], gram[i, j], gram[j, j])
            alpha = torch.zeros(n, dtype=gram.dtype)
            alpha[i], alpha[j] = gamma, 1 - gamma
            norm = float(alpha @ gram @ alpha)
            if norm < best_norm:
                best, best_norm = alpha, norm
    return best  # type: ignore[return-value]


def _normalizers(kind: str, flat: Tensor, values: Tensor) -> Tensor:
    """Per-task divisors of the gradients before solving (Sener & Koltun's options)."""
    norms = flat.norm(dim=1)
    scale = {"none": torch.ones_like(norms), "l2": norms, "loss": values, "loss+": values * norms}
    return scale[kind].clamp_min(1e-12)


def mgda_weights(flat: Tensor, values: Tensor, normalize: str) -> Tensor:
    """alpha (float64, on the CPU) of the min-norm combination of the rows of `flat`, each row
    divided by its normaliser first; the Gram matrix is formed where `flat` lives."""
    flat = flat.double()
    scale = _normalizers(normalize, flat, values.to(flat.device).double())
    gram = (flat @ flat.T) / (scale[:, None] * scale[None, :])
    return min_norm_weights(gram.cpu())


def gradient_surrogate(params: Sequence[Tensor], grads: Sequence[Tensor]) -> Tensor:
    """A scalar whose gradient w.r.t. each of `params` is exactly its `grads` entry.

    Back-propagating it (instead of writing `.grad`) keeps Lightning's precision plug-in,
    gradient clipping and DDP's gradient averaging in charge of the update.
    """
    terms = [(p * g.detach()).sum() for p, g in zip(params, grads, strict=True)]
    return torch.stack(terms).sum() if terms else torch.zeros(())


# -- GradNorm ---------------------------------------------------------------------------------------
class GradNorm(LossWeighting):
    """GradNorm task weights (see the module docstring); weights and L_t(0) live in buffers."""

    def __init__(
        self,
        tasks: list[str],
        weights: Mapping[str, float],
        alpha: float = 1.5,
        lr: float = 0.025,
        layer: str | None = None,
    ) -> None:
        super().__init__(tasks)
        start = torch.tensor([float(weights[t]) for t in tasks], dtype=torch.float64)
        if float(start.sum()) <= 0:
            raise ValueError(f"gradnorm needs positive static weights, got {dict(weights)}")
        self.alpha, self.lr, self.layer = float(alpha), float(lr), layer
        self.register_buffer("task_weights", start * len(tasks) / start.sum())
        self.register_buffer("initial_loss", torch.zeros(len(tasks), dtype=torch.float64))
        self.register_buffer("initialised", torch.zeros(len(tasks), dtype=torch.bool))
        self.layer_names: list[str] = []
        self._layer: list[Tensor] = []

    def bind(self, model: nn.Module) -> None:
        """Find the shared layer W whose per-task gradient norms are balanced."""
        where = "loss_weighting (gradnorm).layer"
        if self.layer is not None:
            names = select_parameters(model, [self.layer], where)
        else:
            names = last_backbone_layer(model, where)
        params = dict(model.named_parameters())
        self.layer_names, self._layer = names, [params[n] for n in names]

    def forward(
        self, losses: Mapping[str, Tensor], present: Mapping[str, bool] | None = None
    ) -> WeightedLoss:
        """sum_t w_t L_t with the current weights; in training, then one update of the weights."""
        self._check(losses)
        weights = [float(w) for w in self.task_weights]
        total = _zero_like(losses)
        for task, weight in zip(self.tasks, weights, strict=True):
            if task in losses:
                total = total + weight * losses[task]
        if self.training and torch.is_grad_enabled():
            self.update(losses, _active(losses, present, self.tasks))
        return WeightedLoss(total, dict(zip(self.tasks, weights, strict=True)))

    def update(self, losses: Mapping[str, Tensor], active: list[str]) -> None:
        """One GradNorm step of the weights from the losses of the `active` tasks."""
        if not active or not self._layer:
            return
        grads = task_gradients([losses[t] for t in active], self._layer, keep_graph=True)
        norms = torch.stack([_flatten(g, self._layer).double().norm() for g in grads])
        values = torch.stack([losses[t].detach().double().cpu() for t in active])
        norms = norms.cpu()
        if not bool(torch.isfinite(norms).all() and torch.isfinite(values).all()):
            return  # a NaN step is skipped by the guard; it must not poison the weights either
        index = torch.tensor([self.tasks.index(t) for t in active])
        self._record_initial(index, values)
        self._step(index, self.weight_gradient(index, norms, values))

    def weight_gradient(self, index: Tensor, norms: Tensor, values: Tensor) -> Tensor:
        """d L_grad / d w_t = sign(G_t - Gbar r_t^alpha) |grad_W L_t| for the tasks in `index`."""
        weights = self.task_weights[index].cpu()
        norm_grads = weights * norms
        ratios = values / self.initial_loss[index].cpu().clamp_min(1e-12)
        relative = ratios / ratios.mean()
        target = norm_grads.mean() * relative**self.alpha
        return torch.sign(norm_grads - target) * norms

    @torch.no_grad()
    def _record_initial(self, index: Tensor, values: Tensor) -> None:
        """L_t(0): a task's loss the first time it is labelled in a batch."""
        device = self.initial_loss.device
        index, values = index.to(device), values.to(device)
        fresh = ~self.initialised[index]
        self.initial_loss[index[fresh]] = values[fresh]
        self.initialised[index] = True

    @torch.no_grad()
    def _step(self, index: Tensor, gradient: Tensor) -> None:
        """w <- w - lr grad, kept positive, renormalised to sum to the number of tasks."""
        device = self.task_weights.device
        self.task_weights[index.to(device)] -= self.lr * gradient.to(device)
        self.task_weights.clamp_(min=MIN_WEIGHT)
        self.task_weights.mul_(len(self.tasks) / self.task_weights.sum())


# -- shared-parameter gradients: PCGrad, MGDA on parameters -----------------------------------------
class SharedGradientWeighting(LossWeighting):
    """Base of strategies that combine per-task gradients of the shared parameters themselves.

    `forward` gives sum_t w_t L_t (logged, checked for NaN); the update comes from
    `combine_gradients`: one backward pass per present task, `combine_shared` for the shared
    parameters, the plain sum for the task-specific ones.
    """

    needs_task_gradients = True
    kind = "shared"
    absent_factor = 0.0  # the logged weight of a task absent from the batch, times its static one

    def __init__(
        self, tasks: list[str], weights: Mapping[str, float], shared: list[str] | None = None
    ) -> None:
        super().__init__(tasks)
        self.static = {t: float(weights[t]) for t in tasks}
        self.shared = list(shared) if shared is not None else None

    def bind(self, model: nn.Module) -> None:
        """Resolve the shared parameters (`shared` patterns, else the model's shared stages)."""
        where = f"loss_weighting ({self.kind}).shared"
        if self.shared is not None:
            names = select_parameters(model, self.shared, where)
        else:
            names = default_shared(model, where)
        self.shared_names = frozenset(names)

    def forward(
        self, losses: Mapping[str, Tensor], present: Mapping[str, bool] | None = None
    ) -> WeightedLoss:
        """sum_t w_t L_t over the given losses (an unlabelled task's loss is already zero)."""
        self._check(losses)
        return WeightedLoss(weighted_sum(losses, self.static), dict(self.static))

    def combine_gradients(
        self,
        losses: Mapping[str, Tensor],
        present: Mapping[str, bool] | None,
        shared: Sequence[Tensor],
        specific: Sequence[Tensor],
    ) -> CombinedGradients:
        """Per-task gradients of all parameters; shared ones combined, specific ones summed."""
        self._check(losses)
        active = _active(losses, present, self.tasks)
        weighted = [self.static[t] * losses[t] for t in active]
        grads = task_gradients(weighted, [*shared, *specific])
        n = len(shared)
        shared_grads, weights = self._shared_update(
            active, weighted, [g[:n] for g in grads], shared
        )
        specific_grads = [_sum_or_none([g[n + k] for g in grads]) for k in range(len(specific))]
        return CombinedGradients([*shared_grads, *specific_grads], weights)

    def _shared_update(
        self,
        active: list[str],
        weighted: list[Tensor],
        grads: list[tuple[Tensor | None, ...]],
        shared: Sequence[Tensor],
    ) -> tuple[list[Tensor | None], dict[str, float]]:
        """Combine the shared gradients; parameters no task reached stay None."""
        reached = [any(g[k] is not None for g in grads) for k in range(len(shared))]
        weights = {t: self.absent_factor * self.static[t] for t in self.tasks}
        if not active or not any(reached):
            return [None] * len(shared), weights
        flat = torch.stack([_flatten(g, shared) for g in grads])
        values = torch.stack([w.detach() for w in weighted])
        combined, task_weights = self.combine_shared(flat, values)
        weights.update({t: task_weights[i] * self.static[t] for i, t in enumerate(active)})
        pieces = _unflatten(combined, shared)
        return [p if r else None for p, r in zip(pieces, reached, strict=True)], weights

    def combine_shared(self, flat: Tensor, values: Tensor) -> tuple[Tensor, list[float]]:
        """[T, P] per-task shared gradients -> the combined [P] gradient and per-task factors."""
        raise NotImplementedError


def _sum_or_none(grads: Sequence[Tensor | None]) -> Tensor | None:
    """Sum of the gradients that exist (None when none does)."""
    present = [g for g in grads if g is not None]
    if not present:
        return None
    total = present[0]
    for g in present[1:]:
        total = total + g
    return total


class PCGrad(SharedGradientWeighting):
    """Projecting conflicting gradients (see the module docstring); `steps` drives the order."""

    kind = "pcgrad"
    absent_factor = 1.0

    def __init__(
        self,
        tasks: list[str],
        weights: Mapping[str, float],
        shared: list[str] | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(tasks, weights, shared)
        self.seed = int(seed)
        self.register_buffer("steps", torch.zeros((), dtype=torch.int64))

    def orders(self, n: int) -> list[list[int]]:
        """For each of `n` tasks, the others in this step's random order (then count the step).

        The generator is seeded by (seed, step count) alone: no global random state is drawn
        from, and a resumed run (the count is a buffer) draws the same orders.
        """
        rng = np.random.default_rng([self.seed, int(self.steps)])
        self.steps += 1
        out = []
        for i in range(n):
            others = [j for j in range(n) if j != i]
            out.append([others[k] for k in rng.permutation(n - 1).tolist()])
        return out

    def combine_shared(self, flat: Tensor, values: Tensor) -> tuple[Tensor, list[float]]:
        """Sum of the projected gradients; every task's factor is 1."""
        return project_conflicts(list(flat), self.orders(flat.shape[0])), [1.0] * flat.shape[0]


class MGDAParameters(SharedGradientWeighting):
    """MGDA on the shared parameters' gradients: they get sum_t alpha_t g_t."""

    kind = "mgda_ub"

    def __init__(
        self,
        tasks: list[str],
        weights: Mapping[str, float],
        shared: list[str] | None = None,
        normalize: str = "none",
    ) -> None:
        super().__init__(tasks, weights, shared)
        self.normalize = normalize

    def combine_shared(self, flat: Tensor, values: Tensor) -> tuple[Tensor, list[float]]:
        """The min-norm combination; factors are alpha."""
        alpha = mgda_weights(flat, values, self.normalize)
        combined = (alpha.to(flat.dtype).to(flat.device)[:, None] * flat).sum(dim=0)
        return combined, alpha.tolist()


# -- MGDA-UB on the shared representation -----------------------------------------------------------
def _tensors(output: Any) -> list[Tensor]:
    """The tensors in a module output (a tensor, or lists / tuples / dicts of them)."""
    if isinstance(output, Tensor):
        return [output]
    if isinstance(output, Mapping):
        output = list(output.values())
    if isinstance(output, list | tuple):
        return [t for item in output for t in _tensors(item)]
    return []


def _submodule(model: nn.Module, name: str, where: str) -> nn.Module:
    """`model`'s module `name`; a clear error listing the top-level modules when it has none."""
    try:
        return model.get_submodule(name)
    except AttributeError:
        children = ", ".join(n for n, _ in model.named_children()) or "none"
        raise DriveMTLError(
            f"{where}: the model has no module '{name}' (its modules: {children})"
        ) from None


class MGDARepresentation(LossWeighting):
    """MGDA-UB: alpha from the gradients of the shared representation Z, then sum_t alpha_t L_t.

    Z are the outputs of the `representation` modules in the last training forward pass; outside
    training, or with fewer than two tasks to balance, every present task keeps alpha = 1.
    """

    def __init__(
        self,
        tasks: list[str],
        weights: Mapping[str, float],
        representation: Sequence[str] = ("backbone", "neck"),
        normalize: str = "none",
    ) -> None:
        super().__init__(tasks)
        self.static = {t: float(weights[t]) for t in tasks}
        self.representation = list(representation)
        self.normalize = normalize
        self._captured: dict[str, list[Tensor]] = {}
        self._handles: list[Any] = []

    def bind(self, model: nn.Module) -> None:
        """Hook the representation modules (each must exist, one must have trainable parameters)."""
        where = "loss_weighting (mgda_ub).representation"
        modules = [_submodule(model, name, where) for name in self.representation]
        if not any(p.requires_grad for m in modules for p in m.parameters()):
            raise DriveMTLError(f"{where}: {self.representation} train no parameter in this stage")
        for handle in self._handles:
            handle.remove()
        self._handles = [
            m.register_forward_hook(partial(self._capture, name))
            for name, m in zip(self.representation, modules, strict=True)
        ]

    def _capture(self, name: str, module: nn.Module, inputs: Any, output: Any) -> None:
        """Forward hook: keep the module's output tensors of a training pass with gradients."""
        if self.training and torch.is_grad_enabled():
            self._captured[name] = [t for t in _tensors(output) if t.requires_grad]

    def forward(
        self, losses: Mapping[str, Tensor], present: Mapping[str, bool] | None = None
    ) -> WeightedLoss:
        """sum_t alpha_t w_t L_t with alpha from this pass's representation gradients."""
        self._check(losses)
        captured = [t for name in self.representation for t in self._captured.get(name, [])]
        self._captured = {}
        alpha = dict.fromkeys(self._present(losses, present), 1.0)
        active = _active(losses, present, self.tasks)
        if self.training and torch.is_grad_enabled() and len(active) > 1 and captured:
            alpha = self.alphas(losses, active, captured)
        total = _zero_like(losses)
        for task, a in alpha.items():
            total = total + a * self.static[task] * losses[task]
        weights = {t: alpha.get(t, 0.0) * self.static[t] for t in self.tasks}
        return WeightedLoss(total, weights)

    def alphas(
        self, losses: Mapping[str, Tensor], active: list[str], captured: list[Tensor]
    ) -> dict[str, float]:
        """Min-norm weights of the active tasks' gradients w.r.t. the captured tensors."""
        weighted = [self.static[t] * losses[t] for t in active]
        grads = task_gradients(weighted, captured, keep_graph=True)
        flat = torch.stack([_flatten(g, captured) for g in grads])
        values = torch.stack([w.detach() for w in weighted])
        alpha = mgda_weights(flat, values, self.normalize)
        return {t: float(a) for t, a in zip(active, alpha, strict=True)}


# -- registry entries -------------------------------------------------------------------------------
@LOSS_WEIGHTINGS.register("gradnorm", options=GradNormOptions)
def gradnorm(options: GradNormOptions, context: WeightingContext) -> GradNorm:
    """GradNorm weights, starting from the static weights scaled to sum to the task count."""
    return GradNorm(context.tasks, context.weights, options.alpha, options.lr, options.layer)


@LOSS_WEIGHTINGS.register("pcgrad", options=PCGradOptions)
def pcgrad(options: PCGradOptions, context: WeightingContext) -> PCGrad:
    """PCGrad gradient surgery on the shared parameters."""
    return PCGrad(context.tasks, context.weights, options.shared, options.seed)


@LOSS_WEIGHTINGS.register("mgda_ub", options=MGDAOptions)
def mgda_ub(options: MGDAOptions, context: WeightingContext) -> LossWeighting:
    """MGDA-UB on the representation (default) or MGDA on the shared parameters."""
    if options.gradients == "parameters":
        return MGDAParameters(context.tasks, context.weights, options.shared, options.normalize)
    return MGDARepresentation(
        context.tasks, context.weights, options.representation, options.normalize
    )
