"""GradNorm, PCGrad and MGDA-UB against hand-computed toy steps, and driving real stages.

The toy problems have a shared parameter w in R^2 and task losses linear in it, so every task's
gradient is a known constant vector (g1 = (2, 1), g2 = (-1, 1) conflict: g1 . g2 = -1).
"""

from __future__ import annotations

import csv
import math
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
import torch
from engine_fixtures import KillAt, SimulatedKill, make_config, same_weights, tiny_model
from torch import Tensor, nn

from drivemtl.config.loader import ConfigError
from drivemtl.engine.checkpoint import load_weights, save_weights
from drivemtl.engine.gradient_balancing import (
    GradNorm,
    MGDAParameters,
    MGDARepresentation,
    PCGrad,
    gradient_surrogate,
    min_norm_weights,
    project_conflicts,
)
from drivemtl.engine.loss_weighting import build_loss_weighting
from drivemtl.engine.module import MultiTaskModule, StageSettings
from drivemtl.engine.run_config import load_run_config
from drivemtl.engine.stages import ScheduleOptions, SGDOptions
from drivemtl.engine.step import StepOutput
from drivemtl.engine.trainer import run_recipe
from drivemtl.errors import DriveMTLError
from drivemtl.models import build_model
from drivemtl.models.config import ModelConfig

F64 = torch.float64
G1, G2 = (2.0, 1.0), (-1.0, 1.0)


def vec(*values: float) -> Tensor:
    return torch.tensor(values, dtype=F64)


def param(*values: float) -> nn.Parameter:
    return nn.Parameter(vec(*values))


class Toy:
    """Shared w (2 values), head parameters h1, h2 and u (read by both tasks):
    L_a = g1 . w + 3 h1 + 2 u + 5,  L_b = g2 . w + 4 h2 - u + 7."""

    def __init__(self, g1: tuple[float, ...] = G1, g2: tuple[float, ...] = G2) -> None:
        self.w, self.h1, self.h2, self.u = param(0.0, 0.0), param(0.0), param(0.0), param(0.0)
        self.g1, self.g2 = vec(*g1), vec(*g2)

    def losses(self) -> dict[str, Tensor]:
        la = self.g1 @ self.w + 3 * self.h1.sum() + 2 * self.u.sum() + 5
        lb = self.g2 @ self.w + 4 * self.h2.sum() - self.u.sum() + 7
        return {"a": la, "b": lb}

    def combine(self, weighting: Any, present: dict[str, bool] | None = None) -> list[Any]:
        out = weighting.combine_gradients(
            self.losses(), present, [self.w], [self.h1, self.h2, self.u]
        )
        self.weights = out.weights
        return out.grads


def assert_vec(actual: Tensor | None, expected: tuple[float, ...]) -> None:
    assert actual is not None
    assert actual.tolist() == pytest.approx(list(expected), abs=1e-12)


# -- PCGrad -------------------------------------------------------------------------------------------
def test_pcgrad_two_conflicting_tasks() -> None:
    toy = Toy()
    w, h1, h2, u = toy.combine(PCGrad(["a", "b"], {"a": 1.0, "b": 1.0}))
    # g1' = g1 - (g1.g2 / |g2|^2) g2 = (2, 1) + 0.5 (-1, 1) = (1.5, 1.5)
    # g2' = g2 - (g2.g1 / |g1|^2) g1 = (-1, 1) + 0.2 (2, 1) = (-0.6, 1.2)
    assert_vec(w, (0.9, 2.7))
    # task-specific parameters get the plain sum (u: 2 - 1, no surgery)
    assert_vec(h1, (3.0,))
    assert_vec(h2, (4.0,))
    assert_vec(u, (1.0,))
    assert toy.weights == {"a": 1.0, "b": 1.0}


def test_pcgrad_uses_the_static_weights_and_leaves_agreeing_gradients_alone() -> None:
    toy = Toy()
    w, _, h2, u = toy.combine(PCGrad(["a", "b"], {"a": 1.0, "b": 2.0}))
    # g2 = 2 (-1, 1) = (-2, 2): g1' = (2, 1) + 2 / 8 (-2, 2) = (1.5, 1.5);
    # g2' = (-2, 2) + 2 / 5 (2, 1) = (-1.2, 2.4)
    assert_vec(w, (0.3, 3.9))
    assert_vec(h2, (8.0,))
    assert_vec(u, (0.0,))
    agree = Toy(g1=(2.0, 1.0), g2=(1.0, 3.0))  # g1 . g2 = 5 > 0: the plain sum
    w, *_ = agree.combine(PCGrad(["a", "b"], {"a": 1.0, "b": 1.0}))
    assert_vec(w, (3.0, 4.0))


def test_pcgrad_absent_task_takes_no_part() -> None:
    toy = Toy()
    w, h1, h2, u = toy.combine(
        PCGrad(["a", "b"], {"a": 1.0, "b": 1.0}), present={"a": True, "b": False}
    )
    assert_vec(w, G1)
    assert_vec(h1, (3.0,))
    assert h2 is None  # no task reached it: .grad stays None, the optimiser skips it
    assert_vec(u, (2.0,))


THREE = [vec(2.0, 0.0), vec(-1.0, 1.0), vec(-1.0, -2.0)]


@pytest.mark.parametrize(
    ("orders", "expected"),
    [
        # g1: .g2 = -2 -> (1, 1); .g3 = -3 -> (1, 1) + 3/5 (-1, -2) = (0.4, -0.2)
        # g2: .g1 = -2 -> (0, 1); .g3 = -2 -> (0, 1) + 2/5 (-1, -2) = (-0.4, 0.2)
        # g3: .g1 = -2 -> (0, -2); .g2 = -2 -> (0, -2) + (-1, 1) = (-1, -1)
        ([[1, 2], [0, 2], [0, 1]], (-1.0, -1.0)),
        # g1: .g3 = -2 -> (1.6, -0.8); .g2 = -2.4 -> (0.4, 0.4)
        # g2: .g3 = -1 -> (-1.2, 0.6); .g1 = -2.4 -> (0, 0.6)
        # g3: .g2 = -1 -> (-1.5, -1.5); .g1 = -3 -> (0, -1.5)
        ([[2, 1], [2, 0], [1, 0]], (0.4, -0.5)),
    ],
)
def test_pcgrad_three_tasks_depend_on_the_order(orders: list[list[int]], expected: tuple) -> None:
    assert_vec(project_conflicts(THREE, orders), expected)


def test_pcgrad_order_is_seeded_and_survives_a_state_dict_round_trip() -> None:
    tasks, weights = ["a", "b", "c"], {"a": 1.0, "b": 1.0, "c": 1.0}
    first = PCGrad(tasks, weights, seed=7)
    drawn = [first.orders(3) for _ in range(6)]
    assert all(sorted(o[i] + [i]) == [0, 1, 2] for o in drawn for i in range(3))
    assert len({str(o) for o in drawn}) > 1  # the order does change between steps
    again = PCGrad(tasks, weights, seed=7)
    assert [again.orders(3) for _ in range(6)] == drawn
    resumed = PCGrad(tasks, weights, seed=7)
    probe = PCGrad(tasks, weights, seed=7)
    [probe.orders(3) for _ in range(3)]
    resumed.load_state_dict(probe.state_dict())  # a checkpoint taken after three steps
    assert int(resumed.steps) == 3
    assert [resumed.orders(3) for _ in range(3)] == drawn[3:]
    other = PCGrad(tasks, weights, seed=8)
    assert [other.orders(3) for _ in range(6)] != drawn


def test_pcgrad_combination_follows_the_drawn_orders() -> None:
    w = param(0.0, 0.0)
    weighting = PCGrad(list("abc"), dict.fromkeys("abc", 1.0), seed=3)
    replay = PCGrad(list("abc"), dict.fromkeys("abc", 1.0), seed=3)
    results = set()
    for _ in range(6):
        losses = {t: g @ w for t, g in zip("abc", THREE, strict=True)}
        (grad,) = weighting.combine_gradients(losses, None, [w], []).grads
        assert torch.equal(grad, project_conflicts(THREE, replay.orders(3)))
        results.add(tuple(grad.tolist()))
    assert len(results) > 1


class ToyNet(nn.Module):
    """The toy's parameters as a model, plus one parameter no task reads."""

    def __init__(self) -> None:
        super().__init__()
        self.toy = Toy()
        self.w, self.h1, self.h2, self.u = self.toy.w, self.toy.h1, self.toy.h2, self.toy.u
        self.unused = param(1.0)


def test_module_backpropagates_the_combined_gradient() -> None:
    net = ToyNet()
    settings = StageSettings(
        name="s",
        tasks=["a", "b"],
        optimizer=SGDOptions(type="sgd", lr=0.1),
        schedule=ScheduleOptions(type="constant"),
        total_steps=1,
    )
    module = MultiTaskModule(net, PCGrad(["a", "b"], {"a": 1.0, "b": 1.0}, ["w"]), settings)
    losses = net.toy.losses()
    out = StepOutput(sum(losses.values()), losses, {}, {"a": True, "b": True})
    out, loss = module.task_gradient_loss(out)
    loss.backward()
    assert net.w.grad.tolist() == pytest.approx([0.9, 2.7])  # the PCGrad numbers above
    assert [float(p.grad) for p in (net.h1, net.h2, net.u)] == pytest.approx([3.0, 4.0, 1.0])
    assert net.unused.grad is None
    assert out.weights == {"a": 1.0, "b": 1.0}
    with pytest.raises(DriveMTLError, match="pattern 'v'"):
        MultiTaskModule(net, PCGrad(["a", "b"], {"a": 1.0, "b": 1.0}, ["v"]), settings)


def test_surrogate_backward_writes_exactly_the_combined_gradient() -> None:
    a, b = nn.Parameter(torch.randn(3, 2)), nn.Parameter(torch.randn(4))
    ga, gb = torch.randn(3, 2), torch.randn(4)
    gradient_surrogate([a, b], [ga, gb]).backward()
    assert torch.equal(a.grad, ga) and torch.equal(b.grad, gb)


# -- MGDA ---------------------------------------------------------------------------------------------
def gram(*grads: Tensor) -> Tensor:
    stacked = torch.stack(grads)
    return stacked @ stacked.T


def two_task_alpha(g1: Tensor, g2: Tensor) -> float:
    return min(1.0, max(0.0, float((g2 - g1) @ g2 / ((g1 - g2) @ (g1 - g2)))))


@pytest.mark.parametrize(
    ("g1", "g2", "alpha"),
    [
        (G1, G2, 1 / 3),  # (-3, 0) . (-1, 1) / 9: the min-norm point (0, 1) of the segment
        ((1.0, 0.0), (3.0, 0.0), 1.0),  # 6 / 4 clipped: g1 itself is the min-norm point
        ((3.0, 0.0), (1.0, 0.0), 0.0),
    ],
)
def test_mgda_two_tasks_closed_form(g1: tuple, g2: tuple, alpha: float) -> None:
    weights = min_norm_weights(gram(vec(*g1), vec(*g2)))
    assert two_task_alpha(vec(*g1), vec(*g2)) == pytest.approx(alpha)
    assert weights.tolist() == pytest.approx([alpha, 1 - alpha], abs=1e-12)


@pytest.mark.parametrize(
    ("grads", "alpha"),
    [
        ([(1.0, 0.0), (0.0, 1.0), (2.0, 2.0)], [0.5, 0.5, 0.0]),  # the third is dominated
        ([(1.0, 0.0), (0.0, 1.0), (-1.0, -1.0)], [1 / 3, 1 / 3, 1 / 3]),  # hull holds 0
    ],
)
def test_mgda_frank_wolfe_three_tasks(grads: list[tuple], alpha: list[float]) -> None:
    weights = min_norm_weights(gram(*(vec(*g) for g in grads)))
    assert weights.tolist() == pytest.approx(alpha, abs=1e-3)
    assert float(weights.sum()) == pytest.approx(1.0)


def test_mgda_frank_wolfe_is_no_worse_than_a_simplex_grid() -> None:
    torch.manual_seed(0)
    grads = torch.randn(4, 6, dtype=F64)
    g = grads @ grads.T
    alpha = min_norm_weights(g)
    assert bool((alpha >= 0).all()) and float(alpha.sum()) == pytest.approx(1.0)
    steps = 12
    best = math.inf
    for i in range(steps + 1):
        for j in range(steps + 1 - i):
            for k in range(steps + 1 - i - j):
                point = torch.tensor([i, j, k, steps - i - j - k], dtype=F64) / steps
                best = min(best, float(point @ g @ point))
    assert float(alpha @ g @ alpha) <= best + 1e-6


def test_mgda_on_parameters_combines_shared_and_sums_specific() -> None:
    toy = Toy()
    w, h1, h2, u = toy.combine(MGDAParameters(["a", "b"], {"a": 1.0, "b": 1.0}))
    assert_vec(w, (0.0, 1.0))  # 1/3 g1 + 2/3 g2
    assert_vec(h1, (3.0,))
    assert_vec(h2, (4.0,))
    assert_vec(u, (1.0,))
    assert toy.weights == pytest.approx({"a": 1 / 3, "b": 2 / 3})
    w, *_ = toy.combine(MGDAParameters(["a", "b"], {"a": 1.0, "b": 1.0}), {"b": False})
    assert_vec(w, G1)
    assert toy.weights == {"a": 1.0, "b": 0.0}


def test_mgda_normalisation_changes_the_weights() -> None:
    toy = Toy(g1=(4.0, 0.0), g2=(0.0, 1.0))
    toy.combine(MGDAParameters(["a", "b"], {"a": 1.0, "b": 1.0}))
    assert toy.weights["a"] == pytest.approx(1 / 17)  # (-4, 1) . (0, 1) / 17
    w, *_ = toy.combine(MGDAParameters(["a", "b"], {"a": 1.0, "b": 1.0}, normalize="l2"))
    assert toy.weights["a"] == pytest.approx(0.5)  # (1, 0) and (0, 1) after normalising
    assert_vec(w, (2.0, 0.5))  # alpha applies to the raw gradients
    toy.combine(MGDAParameters(["a", "b"], {"a": 1.0, "b": 1.0}, normalize="loss"))
    # losses 5 and 7 at w = 0: g1 / 5 = (0.8, 0), g2 / 7 = (0, 1/7)
    a, b = vec(0.8, 0.0), vec(0.0, 1 / 7)
    assert toy.weights["a"] == pytest.approx(two_task_alpha(a, b))


class Encoder(nn.Module):
    """z = W x (x = (1, 2)): the shared representation of the representation-mode toy."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Linear(2, 2, bias=False).double()
        with torch.no_grad():
            self.encoder.weight.copy_(torch.tensor([[0.5, -1.0], [2.0, 0.0]]))
        self.head = nn.Parameter(vec(3.0))

    def losses(self) -> dict[str, Tensor]:
        z = self.encoder(vec(1.0, 2.0))
        return {"a": vec(*G1) @ z + self.head.sum(), "b": vec(*G2) @ z}


def test_mgda_ub_weights_from_the_representation_gradient() -> None:
    model = Encoder()
    weighting = MGDARepresentation(["a", "b"], {"a": 1.0, "b": 1.0}, ["encoder"])
    weighting.bind(model)
    weighting.train()
    losses = model.losses()
    out = weighting(losses)
    assert out.weights == pytest.approx({"a": 1 / 3, "b": 2 / 3})  # dL/dz = g1, g2
    z = model.encoder(vec(1.0, 2.0)).detach()
    expected_total = float(vec(*G1) @ z + 3.0) / 3 + float(vec(*G2) @ z) * 2 / 3
    assert out.total.item() == pytest.approx(expected_total)
    out.total.backward()
    # dW = (1/3 g1 + 2/3 g2) x^T = (0, 1) (1, 2)^T
    assert model.encoder.weight.grad.flatten().tolist() == pytest.approx([0, 0, 1, 2])
    assert model.head.grad.tolist() == pytest.approx([1 / 3])

    weighting.eval()  # outside training: the plain sum, nothing captured
    with torch.no_grad():
        out = weighting(model.losses())
    assert out.weights == {"a": 1.0, "b": 1.0}
    weighting.train()
    out = weighting(model.losses(), present={"a": True, "b": False})
    assert out.weights == {"a": 1.0, "b": 0.0}


# -- GradNorm -----------------------------------------------------------------------------------------
class Shared(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = param(0.0, 0.0)


def gradnorm_losses(model: Shared, la: float, lb: float) -> dict[str, Tensor]:
    """Values la, lb at w = 0 with gradients (3, 4) (norm 5) and (0, 1) (norm 1)."""
    return {"a": vec(3.0, 4.0) @ model.w + la, "b": vec(0.0, 1.0) @ model.w + lb}


def test_gradnorm_updates_against_hand_computation() -> None:
    model = Shared()
    weighting = GradNorm(["a", "b"], {"a": 1.0, "b": 1.0}, alpha=1.5, lr=0.1, layer="w")
    weighting.bind(model)
    weighting.train()
    out = weighting(gradnorm_losses(model, 2.0, 4.0))
    # step 1 records L(0) = (2, 4): r = (1, 1); G = (5, 1), Gbar = 3, target (3, 3)
    # dL_grad/dw = sign(G - target) |grad L| = (5, -1); w = (1 - 0.5, 1 + 0.1) * 2 / 1.6
    assert out.weights == {"a": 1.0, "b": 1.0}
    assert out.total.item() == pytest.approx(6.0)
    assert weighting.task_weights.tolist() == pytest.approx([0.625, 1.375])

    out = weighting(gradnorm_losses(model, 1.8, 2.0))
    # step 2: Ltilde = (0.9, 0.5), mean 0.7, r = (9/7, 5/7); G = (3.125, 1.375), Gbar = 2.25
    # target = 2.25 r^1.5 = (3.2803, 1.3584): both signs flip (with alpha = 1 they would not)
    # w = (0.625 + 0.5, 1.375 - 0.1) = (1.125, 1.275), * 2 / 2.4
    assert out.weights == pytest.approx({"a": 0.625, "b": 1.375})
    assert out.total.item() == pytest.approx(0.625 * 1.8 + 1.375 * 2.0)
    assert weighting.task_weights.tolist() == pytest.approx([0.9375, 1.0625])
    out.total.backward()  # the network's gradient uses the weights before the update
    assert model.w.grad.tolist() == pytest.approx([0.625 * 3, 0.625 * 4 + 1.375])


def test_gradnorm_step_is_the_gradient_of_its_loss() -> None:
    model = Shared()
    weighting = GradNorm(["a", "b"], {"a": 3.0, "b": 1.0}, alpha=0.5, lr=0.01, layer="w")
    weighting.bind(model)
    weighting.train()
    weighting(gradnorm_losses(model, 2.0, 4.0))
    before = weighting.task_weights.clone()
    weighting(gradnorm_losses(model, 1.5, 3.5))
    # autograd on L_grad = sum |w_t n_t - Gbar r_t^alpha| with the target held constant
    w = before.clone().requires_grad_(True)
    norms = vec(5.0, 1.0)
    ratios = vec(1.5 / 2.0, 3.5 / 4.0)
    target = (w * norms).mean().detach() * (ratios / ratios.mean()) ** 0.5
    (w * norms - target).abs().sum().backward()
    expected = before - 0.01 * w.grad
    expected = expected * 2 / expected.sum()
    assert weighting.task_weights.tolist() == pytest.approx(expected.tolist(), abs=1e-12)
    assert not torch.allclose(weighting.task_weights, before)


def test_gradnorm_absent_task_takes_no_part_and_state_round_trips() -> None:
    model = Shared()
    weighting = GradNorm(["a", "b"], {"a": 1.0, "b": 1.0}, lr=0.1, layer="w")
    weighting.bind(model)
    weighting.train()
    weighting(gradnorm_losses(model, 2.0, 0.0), present={"a": True, "b": False})
    assert weighting.task_weights.tolist() == [1.0, 1.0]  # one task: nothing to balance
    assert weighting.initialised.tolist() == [True, False]
    weighting(gradnorm_losses(model, 1.0, 5.0))  # b's first labelled batch sets its L(0)
    assert weighting.initial_loss.tolist() == [2.0, 5.0]
    clone = GradNorm(["a", "b"], {"a": 1.0, "b": 1.0}, lr=0.1, layer="w")
    clone.load_state_dict(weighting.state_dict())
    assert torch.equal(clone.task_weights, weighting.task_weights)


def test_gradnorm_default_layer_is_the_last_backbone_weight() -> None:
    model = build_model(ModelConfig.model_validate(tiny_model()))
    weighting = build_loss_weighting({"type": "gradnorm", "alpha": 1.5}, model.task_names, {}, 1)
    weighting.bind(model)
    assert weighting.layer_names == ["backbone.layer4.1.conv2.weight"]
    for p in model.backbone.parameters():
        p.requires_grad_(False)
    with pytest.raises(DriveMTLError, match=r"no trainable backbone weight.*`layer`"):
        weighting.bind(model)


# -- configuration -------------------------------------------------------------------------------------
def test_default_shared_parameters_are_the_shared_stages() -> None:
    model = build_model(ModelConfig.model_validate(tiny_model()))
    weighting = build_loss_weighting({"type": "pcgrad"}, model.task_names, {}, 1)
    weighting.bind(model)
    names = [n for n, _ in model.named_parameters()]
    assert weighting.shared_names == {n for n in names if not n.startswith("heads.")}
    weighting = build_loss_weighting({"type": "pcgrad", "shared": ["@neck"]}, ["semantic"], {}, 1)
    weighting.bind(model)
    assert weighting.shared_names == {n for n in names if n.startswith("neck.")}


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"type": "pcgrad", "shared": ["encoder.*"]}, r"\(pcgrad\)\.shared: pattern 'encoder\.\*'"),
        ({"type": "mgda_ub", "gradients": "parameters", "shared": ["@adapter"]}, "'@adapter'"),
        ({"type": "gradnorm", "layer": "backbone.fc.weight"}, r"\(gradnorm\)\.layer: pattern"),
        ({"type": "mgda_ub", "representation": ["encoder"]}, "no module 'encoder'"),
    ],
)
def test_patterns_that_match_nothing_are_clear_errors(spec: dict, message: str) -> None:
    model = build_model(ModelConfig.model_validate(tiny_model()))
    weighting = build_loss_weighting(spec, model.task_names, {}, 1)
    with pytest.raises(DriveMTLError, match=message):
        weighting.bind(model)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ("{type: pcgrad, alpha: 1.5}", r"unknown key 'recipe\.stages\.0\.loss_weighting\.alpha'"),
        ("{type: gradnorm, shared: [neck.*]}", r"unknown key .*loss_weighting\.shared'"),
        ("{type: gradnorm, lr: 0}", r"recipe\.stages\.0\.loss_weighting\.lr"),
        ("{type: mgda_ub, shared: [neck.*]}", "used with `gradients: parameters` only"),
        ("{type: mgda_ub, normalize: l1}", r"loss_weighting\.normalize"),
    ],
)
def test_bad_options_are_config_errors(tmp_path: Path, options: str, message: str) -> None:
    path = tmp_path / "run.yaml"
    path.write_text(f"recipe:\n  stages:\n    - {{name: a, steps: 1, loss_weighting: {options}}}\n")
    with pytest.raises(ConfigError, match=message):
        load_run_config(path)


def test_options_are_typed_in_yaml(tmp_path: Path) -> None:
    path = tmp_path / "run.yaml"
    path.write_text(
        "recipe:\n  stages:\n    - {name: a, steps: 1, loss_weighting: {type: gradnorm, alpha: 1}}\n"
    )
    spec = load_run_config(path).recipe.stages[0].loss_weighting
    assert (spec.type, spec.alpha, spec.lr, spec.layer) == ("gradnorm", 1.0, 0.025, None)


def test_a_pattern_that_matches_nothing_stops_the_stage_before_training(
    tiny_data: Path, tmp_path: Path
) -> None:
    stage = {**STAGE, "loss_weighting": {"type": "pcgrad", "shared": ["neck.lateral.*"]}}
    with pytest.raises(DriveMTLError, match=r"pattern 'neck\.lateral\.\*' matches no trainable"):
        run_recipe(make_config(tiny_data, [stage]), tmp_path / "run", progress=False)


# -- real stages -------------------------------------------------------------------------------------
STAGE = {
    "name": "joint",
    "steps": 3,
    "sampler": "none",
    "batch_size": 4,
    "optimizer": {"type": "sgd", "lr": 0.05},
}


def _metrics(run: Path, stage: str) -> dict[int, dict[str, float]]:
    """Step -> logged values of one stage (from the CSV logger)."""
    path = run / "stages" / stage / "logs" / "csv" / "version_0" / "metrics.csv"
    rows: dict[int, dict[str, float]] = defaultdict(dict)
    with path.open() as handle:
        for row in csv.DictReader(handle):
            rows[int(row["step"])].update({k: float(v) for k, v in row.items() if v != ""})
    return rows


def _start(tiny_data: Path, tmp_path: Path) -> str:
    """The same initial weights for every run of a test."""
    init = tmp_path / "start.safetensors"
    if not init.is_file():
        torch.manual_seed(0)
        save_weights(build_model(make_config(tiny_data, [STAGE]).model), init)
    return str(init)


@pytest.mark.slow
@pytest.mark.parametrize(
    "weighting",
    [
        {"type": "gradnorm", "alpha": 1.5},
        {"type": "pcgrad"},
        {"type": "mgda_ub"},
        {"type": "mgda_ub", "gradients": "parameters", "normalize": "l2"},
    ],
    ids=["gradnorm", "pcgrad", "mgda_ub", "mgda_parameters"],
)
def test_each_method_drives_a_real_stage(
    tiny_data: Path, tmp_path: Path, weighting: dict[str, Any]
) -> None:
    stage = {**STAGE, "init": _start(tiny_data, tmp_path), "loss_weighting": weighting}
    result = run_recipe(make_config(tiny_data, [stage]), tmp_path / "run", progress=False)
    start, final = load_weights(Path(stage["init"])), load_weights(result.final_weights)
    moved = [k for k in start if not torch.equal(start[k], final[k])]
    assert any(k.startswith("backbone.") for k in moved)
    assert any(k.startswith("heads.semantic.") for k in moved)
    assert any(k.startswith("heads.tagging.") for k in moved)
    assert all(torch.isfinite(v).all() for v in final.values())

    rows = [v for v in _metrics(tmp_path / "run", "00-joint").values() if "loss/total" in v]
    assert len(rows) == 3 and all(math.isfinite(v["loss/total"]) for v in rows)
    both = [v for v in rows if "loss/semantic" in v and "loss/tagging" in v]
    assert both, "the sampler gave no batch with both tasks"
    weights = [(v["weight/semantic"], v["weight/tagging"]) for v in rows]
    if weighting["type"] == "gradnorm":
        assert all(sum(w) == pytest.approx(2.0) for w in weights)
        assert len(set(weights)) > 1  # the weights were learned
    elif weighting["type"] == "mgda_ub":
        for v in both:  # a convex combination
            assert v["weight/semantic"] + v["weight/tagging"] == pytest.approx(1.0)
    else:
        assert set(weights) == {(1.0, 1.0)}


@pytest.mark.slow
def test_pcgrad_heads_get_the_plain_gradient(tiny_data: Path, tmp_path: Path) -> None:
    init = _start(tiny_data, tmp_path)
    finals = {}
    for kind in ("fixed", "pcgrad"):
        stage = {**STAGE, "steps": 1, "init": init, "loss_weighting": {"type": kind}}
        config = make_config(tiny_data, [stage], deterministic=True)
        finals[kind] = load_weights(
            run_recipe(config, tmp_path / kind, progress=False).final_weights
        )
    for name, value in finals["fixed"].items():
        if name.startswith("heads."):  # one SGD step on the plain sum of the task gradients
            assert torch.allclose(value, finals["pcgrad"][name], rtol=1e-5, atol=1e-7), name
    # on this data and start the two tasks' backbone + neck gradients conflict: surgery changed them
    shared = [n for n in finals["fixed"] if n.startswith(("backbone.", "neck."))]
    assert any(not torch.equal(finals["fixed"][n], finals["pcgrad"][n]) for n in shared)


@pytest.mark.slow
def test_pcgrad_resume_after_a_kill_is_exact(tiny_data: Path, tmp_path: Path) -> None:
    stage = {
        **STAGE,
        "steps": 4,
        "init": _start(tiny_data, tmp_path),
        "optimizer": {"lr": 1e-3},
        "loss_weighting": {"type": "pcgrad", "seed": 5},
    }
    config = make_config(tiny_data, [stage], deterministic=True, checkpoint_every_n_steps=1)
    straight = run_recipe(config, tmp_path / "straight", progress=False)
    out = tmp_path / "interrupted"
    with pytest.raises(SimulatedKill):
        run_recipe(config, out, progress=False, callbacks=[KillAt("joint", 2)])
    resumed = run_recipe(config, out, resume=True, progress=False)
    assert resumed.stages[0].steps == 4
    same_weights(straight.final_weights, resumed.final_weights)


@pytest.mark.slow
def test_pcgrad_under_manual_optimisation_equals_automatic(tiny_data: Path, tmp_path: Path) -> None:
    stage = {
        **STAGE,
        "init": _start(tiny_data, tmp_path),
        "optimizer": {"lr": 1e-2},
        "loss_weighting": {"type": "pcgrad", "seed": 1},
    }
    automatic = run_recipe(
        make_config(tiny_data, [stage], deterministic=True), tmp_path / "auto", progress=False
    )
    groups = {"type": "supervised", "optimizers": [{"params": ["@decoder"], "lr": 1e-2}]}
    split = make_config(tiny_data, [{**stage, "kind": groups}], deterministic=True)
    manual = run_recipe(split, tmp_path / "manual", progress=False)
    same_weights(automatic.final_weights, manual.final_weights)
    assert manual.stages[0].steps == 3
