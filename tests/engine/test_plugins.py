"""Optimisers, lr schedules and loss weightings are `type` + options plug-ins.

A new optimiser (sign SGD with a step `scale`), schedule (exponential decay with a `rate` per
length unit) and loss weighting (weighted geometric mean with an `eps`) are registered here, in
the test file only, selected by `type` in a config and checked against hand-computed values; all
three drive a real training stage through `run_recipe`. Unknown types and the old `name:` key are
config errors that name the key and list what is known.
"""

from __future__ import annotations

import csv
import math
import re
import subprocess
import sys
from collections import defaultdict
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
import torch
from engine_fixtures import make_config
from pydantic import Field
from torch import Tensor, nn

from drivemtl.config.loader import ConfigError
from drivemtl.engine.checkpoint import load_weights, save_weights
from drivemtl.engine.loss_weighting import (
    LOSS_WEIGHTINGS,
    LossWeighting,
    LossWeightingOptions,
    WeightedLoss,
    WeightingContext,
    build_loss_weighting,
)
from drivemtl.engine.run_config import load_run_config
from drivemtl.engine.stages import (
    OPTIMIZERS,
    SCHEDULES,
    OptimizerOptions,
    ScheduleOptions,
    StageLength,
    build_optimizer,
    lr_factor_fn,
)
from drivemtl.engine.trainer import run_recipe
from drivemtl.models import build_model


# -- the new plug-ins ----------------------------------------------------------------------------
class SignSGD(torch.optim.Optimizer):
    """p <- p - lr * scale * sign(grad) (decoupled weight decay lr * wd * p first)."""

    def __init__(self, params: Any, lr: float, scale: float) -> None:
        super().__init__(params, {"lr": lr, "scale": scale, "weight_decay": 0.0})

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                if group["weight_decay"]:
                    p.mul_(1 - group["lr"] * group["weight_decay"])
                p.add_(torch.sign(p.grad), alpha=-group["lr"] * group["scale"])
        return loss


class SignSGDOptions(OptimizerOptions):
    scale: float = Field(1.0, gt=0.0, description="step = lr * scale")


@OPTIMIZERS.register("test_signsgd", options=SignSGDOptions)
def signsgd(options: SignSGDOptions, groups: list[dict[str, Any]]) -> torch.optim.Optimizer:
    return SignSGD(groups, lr=options.lr, scale=options.scale)


class ExponentialOptions(ScheduleOptions):
    rate: float = Field(0.5, gt=0.0, le=1.0, description="lr factor per length unit")


@SCHEDULES.register("test_exponential", options=ExponentialOptions)
def exponential(options: ExponentialOptions, length: StageLength) -> Callable[[int], float]:
    return lambda step: options.rate ** (step / length.steps_per_unit)


class GeometricOptions(LossWeightingOptions):
    eps: float = Field(0.0, ge=0.0, description="added to every loss before the logarithm")


@LOSS_WEIGHTINGS.register("test_geometric", options=GeometricOptions)
class GeometricMeanWeighting(LossWeighting):
    """exp(sum_t w_t log(L_t + eps) / sum_t w_t) over the tasks present in the batch.

    The entry is the class itself: it is called as `entry(options, context)`. The reported weight
    of a task is d total / d L_t.
    """

    def __init__(self, options: GeometricOptions, context: WeightingContext) -> None:
        super().__init__(context.tasks)
        self.eps = options.eps
        self.static = dict(context.weights)

    def forward(
        self, losses: Mapping[str, Tensor], present: Mapping[str, bool] | None = None
    ) -> WeightedLoss:
        self._check(losses)
        active = self._present(losses, present)
        zero = sum(v * 0.0 for v in losses.values())
        if not active:
            return WeightedLoss(zero, dict.fromkeys(self.tasks, 0.0))  # type: ignore[arg-type]
        norm = sum(self.static[t] for t in active)
        log_total = sum(self.static[t] / norm * torch.log(losses[t] + self.eps) for t in active)
        total = torch.exp(log_total) + zero
        value = float(total.detach())
        weights = {
            t: value * self.static[t] / norm / (float(losses[t].detach()) + self.eps)
            if t in active
            else 0.0
            for t in self.tasks
        }
        return WeightedLoss(total, weights)


# -- values of each plug-in ----------------------------------------------------------------------
def test_new_optimizer_steps_by_sign_with_its_own_option() -> None:
    weight = nn.Parameter(torch.tensor([1.0, -2.0, 0.5]))
    bias = nn.Parameter(torch.tensor([0.25]))
    spec = {"type": "test_signsgd", "lr": 0.1, "scale": 2.0, "weight_decay": 0.5}
    opt = build_optimizer([("w", weight), ("b", bias)], spec, norm_and_bias_names={"b"})
    assert isinstance(opt, SignSGD)
    decay, no_decay = opt.param_groups
    assert (decay["weight_decay"], no_decay["weight_decay"]) == (0.5, 0.0)
    assert decay["scale"] == 2.0
    weight.grad = torch.tensor([3.0, -0.1, 0.0])
    bias.grad = torch.tensor([-7.0])
    opt.step()
    # w: decay (1 - 0.1 * 0.5) = 0.95, then - 0.2 * sign(g); the bias has no decay
    expected = [1.0 * 0.95 - 0.2, -2.0 * 0.95 + 0.2, 0.5 * 0.95]
    assert weight.tolist() == pytest.approx(expected)
    assert bias.tolist() == pytest.approx([0.25 + 0.2])


@pytest.mark.parametrize(
    ("options", "steps_per_unit", "step", "expected"),
    [
        ({"rate": 0.5}, 1, 0, 1.0),
        ({"rate": 0.5}, 1, 3, 0.125),
        ({"rate": 0.5}, 10, 5, 0.5**0.5),  # `rate` per epoch of 10 steps
        ({"rate": 0.9}, 10, 20, 0.81),
        # the generic warm-up (from 0.2 over 4 steps) multiplies the main schedule, once
        ({"rate": 0.5, "warmup_steps": 4, "warmup_factor": 0.2}, 1, 0, 0.2),
        ({"rate": 0.5, "warmup_steps": 4, "warmup_factor": 0.2}, 1, 2, 0.25 * 0.6),
        ({"rate": 0.5, "warmup_steps": 4, "warmup_factor": 0.2}, 1, 4, 0.0625),
    ],
)
def test_new_schedule_factors(
    options: dict[str, Any], steps_per_unit: int, step: int, expected: float
) -> None:
    factor = lr_factor_fn({"type": "test_exponential", **options}, 100, steps_per_unit)
    assert factor(step) == pytest.approx(expected)


def test_new_loss_weighting_weighted_geometric_mean() -> None:
    def t(x: float) -> Tensor:
        return torch.tensor(x, dtype=torch.float64, requires_grad=True)

    # static weights: a from the stage's `weights`, b from the model's loss weight
    w = build_loss_weighting(
        {"type": "test_geometric", "weights": {"a": 3.0}}, ["a", "b", "c"], {"b": 1.0}, 1
    )
    assert isinstance(w, GeometricMeanWeighting)
    la, lb, lc = t(4.0), t(1.0), t(9.0)
    out = w({"a": la, "b": lb, "c": lc}, present={"a": True, "b": True, "c": False})
    # exp((3 ln 4 + 1 ln 1) / 4) = 4 ** 0.75; c is absent
    assert out.total.item() == pytest.approx(4.0**0.75)
    out.total.backward()
    assert float(la.grad) == pytest.approx(4.0**0.75 * 0.75 / 4.0)
    assert float(lb.grad) == pytest.approx(4.0**0.75 * 0.25 / 1.0)
    assert float(lc.grad) == 0.0
    assert out.weights == pytest.approx(
        {"a": 4.0**0.75 * 0.75 / 4.0, "b": 4.0**0.75 * 0.25, "c": 0.0}
    )
    eps = build_loss_weighting({"type": "test_geometric", "eps": 1.0}, ["a", "b"], {}, 1)
    assert eps({"a": t(3.0), "b": t(0.0)}).total.item() == pytest.approx(math.sqrt(4.0 * 1.0))


def test_new_types_are_selected_and_typed_in_yaml_configs(tmp_path: Path) -> None:
    path = tmp_path / "run.yaml"
    path.write_text(
        "recipe:\n"
        "  stages:\n"
        "    - name: a\n"
        "      steps: 4\n"
        "      optimizer: {type: test_signsgd, lr: 0.01, scale: 3}\n"
        "      schedule: {type: test_exponential, rate: 0.25}\n"
        "      loss_weighting: {type: test_geometric, eps: 0.5}\n"
    )
    config = load_run_config(path, ["recipe.stages.0.schedule.rate=0.5"])
    stage = config.recipe.stages[0]
    assert isinstance(stage.optimizer, SignSGDOptions) and stage.optimizer.scale == 3.0
    assert isinstance(stage.schedule, ExponentialOptions) and stage.schedule.rate == 0.5
    assert isinstance(stage.loss_weighting, GeometricOptions) and stage.loss_weighting.eps == 0.5
    with pytest.raises(ConfigError, match=r"unknown key 'recipe\.stages\.0\.schedule\.gamma'"):
        load_run_config(path, ["recipe.stages.0.schedule.gamma=0.5"])  # not an option of it
    (tmp_path / "bad.yaml").write_text(path.read_text().replace("rate: 0.25", "rate: 2"))
    with pytest.raises(ConfigError, match=r"recipe\.stages\.0\.schedule\.rate"):
        load_run_config(tmp_path / "bad.yaml")


# -- errors ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("section", "value", "message"),
    [
        ("optimizer", "{type: adam, lr: 0.1}", r"unknown optimizer 'adam'; known: adamw, sgd"),
        ("schedule", "{type: linear}", r"unknown schedule 'linear'; known: constant, cosine, poly"),
        ("loss_weighting", "{type: nash}", r"unknown loss weighting 'nash'; known: dwa"),
        ("kind", "{type: distill}", r"unknown stage kind 'distill'; known: per_decoder"),
    ],
)
def test_unknown_type_names_the_key_and_the_known_types(
    tmp_path: Path, section: str, value: str, message: str
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(f"recipe:\n  stages:\n    - {{name: a, steps: 1, {section}: {value}}}\n")
    with pytest.raises(ConfigError, match=rf"'recipe\.stages\.0\.{section}'") as info:
        load_run_config(path)
    assert str(path) in str(info.value)
    assert len(re.findall(message, str(info.value))) == 1


def test_old_name_key_is_an_unknown_key_that_lists_type(tmp_path: Path) -> None:
    path = tmp_path / "old.yaml"
    path.write_text(
        "recipe:\n  stages:\n    - {name: a, steps: 1, optimizer: {name: sgd, lr: 0.1}}\n"
    )
    with pytest.raises(
        ConfigError,
        match=r"unknown key 'recipe\.stages\.0\.optimizer\.name' \(given 'sgd' \(str\)\); "
        r"expected one of: betas, decay_norm_and_bias, lr, lr_scale, type, weight_decay",
    ):
        load_run_config(path)


# -- a real stage with all three -----------------------------------------------------------------
def _metrics(run: Path, stage: str) -> dict[int, dict[str, float]]:
    """Step -> logged values of one stage (from the CSV logger)."""
    path = run / "stages" / stage / "logs" / "csv" / "version_0" / "metrics.csv"
    rows: dict[int, dict[str, float]] = defaultdict(dict)
    with path.open() as handle:
        for row in csv.DictReader(handle):
            rows[int(row["step"])].update({k: float(v) for k, v in row.items() if v != ""})
    return rows


@pytest.mark.slow
def test_new_plugins_drive_a_real_stage(tiny_data: Path, tmp_path: Path) -> None:
    stage = {
        "name": "signs",
        "steps": 3,
        "sampler": "none",
        "batch_size": 4,
        "optimizer": {"type": "test_signsgd", "lr": 0.01, "scale": 2.0, "weight_decay": 0.0},
        "schedule": {"type": "test_exponential", "rate": 0.5},
        "loss_weighting": {"type": "test_geometric"},
    }
    config = make_config(tiny_data, [{**stage, "init": str(tmp_path / "start.safetensors")}])
    torch.manual_seed(0)
    save_weights(build_model(config.model), tmp_path / "start.safetensors")
    result = run_recipe(config, tmp_path / "run", progress=False)
    start = load_weights(tmp_path / "start.safetensors")
    final = load_weights(result.final_weights)

    # each step moves a parameter by exactly lr_k * scale = 0.02, 0.01, 0.005 (or not at all):
    # the total change is a multiple k of 0.005 with |k| <= 4 + 2 + 1
    params = {n for n, _ in build_model(config.model).named_parameters()}
    ks = torch.cat([((final[n] - start[n]) / 0.005).flatten() for n in sorted(params)])
    assert torch.all((ks - ks.round()).abs() < 1e-3)
    assert ks.abs().max().round() == 7  # some weight moved three times the same way
    assert set(ks.round().abs().unique().tolist()) > {0.0, 7.0}

    rows = _metrics(tmp_path / "run", "00-signs")
    lr = [rows[s]["lr-SignSGD/pg1"] for s in sorted(rows) if "lr-SignSGD/pg1" in rows[s]]
    assert lr == pytest.approx([0.01, 0.005, 0.0025])
    checked = 0
    for values in rows.values():
        if "loss/total" not in values:
            continue
        present = [values[f"loss/{t}"] for t in ("semantic", "tagging") if f"loss/{t}" in values]
        assert present
        assert values["loss/total"] == pytest.approx(math.prod(present) ** (1 / len(present)))
        for task in ("semantic", "tagging"):
            if f"loss/{task}" in values:
                expected = values["loss/total"] / len(present) / values[f"loss/{task}"]
                assert values[f"weight/{task}"] == pytest.approx(expected, rel=1e-4)
        checked += 1
    assert checked == 3


def test_registries_and_recipe_schema_import_without_lightning() -> None:
    code = (
        "import sys\n"
        "from drivemtl.engine.stages import OPTIMIZERS, SCHEDULES, STAGE_KINDS\n"
        "from drivemtl.engine.loss_weighting import LOSS_WEIGHTINGS\n"
        "import drivemtl.engine.config, drivemtl.engine.plan, drivemtl.engine.run_config\n"
        "import drivemtl.engine.units\n"
        "print(OPTIMIZERS.names(), SCHEDULES.names(), LOSS_WEIGHTINGS.names(), STAGE_KINDS.names())\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('lightning', 'pytorch_lightning')))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert out == [
        "['adamw', 'sgd'] ['constant', 'cosine', 'poly', 'step'] ['dwa', 'fixed', 'gradnorm', 'mgda_ub', 'pcgrad', 'uncertainty'] "
        "['per_decoder', 'pseudo_label', 'supervised', 'uda_adversarial']",
        "[]",
    ]
