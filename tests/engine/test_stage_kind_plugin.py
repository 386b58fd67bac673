"""A stage kind is a plug-in for planning and execution: one defined here, in the test file only,
plans a stage into two units (a fine-tuning unit the engine trains, and a unit of its own that
runs its own code), runs inside a recipe through `run_recipe` and, killed in either unit and
resumed, ends with the same weights as an uninterrupted run.

The kind is WiSE-FT (Wortsman et al., "Robust fine-tuning of zero-shot models", CVPR 2022):
fine-tune from the stage's start point, then interpolate in weight space,
theta = (1 - alpha) theta_start + alpha theta_finetuned.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from engine_fixtures import KillAt, SimulatedKill, make_config, same_weights
from pydantic import Field

from drivemtl.engine.checkpoint import load_weights, save_weights
from drivemtl.engine.plan import StagePlan, StageRequest, plan_for_model
from drivemtl.engine.stages import STAGE_KINDS, StageKindOptions
from drivemtl.engine.trainer import RunContext, run_recipe
from drivemtl.engine.units import WEIGHTS, StageResult, Unit
from drivemtl.models import build_model


# -- the new kind --------------------------------------------------------------------------------
class WiseOptions(StageKindOptions):
    alpha: float = Field(0.5, ge=0.0, le=1.0, description="weight of the fine-tuned model")


KILL_INTERPOLATION = {"armed": False}


@dataclass
class Interpolate(Unit):
    """The kind's own unit: (1 - alpha) * start + alpha * the fine-tuned unit's weights."""

    finetuned: str = ""
    alpha: float = 0.5

    def reads(self) -> list[str]:
        return [*super().reads(), self.finetuned]

    def run(self, context: RunContext) -> StageResult:
        start = context.start_model(self).state_dict()
        tuned = load_weights(context.weights(f"stage:{self.finetuned}"))
        if KILL_INTERPOLATION["armed"]:
            KILL_INTERPOLATION["armed"] = False
            raise SimulatedKill(f"killed in {self.name}")
        mixed = {
            k: torch.lerp(start[k], v, self.alpha) if v.is_floating_point() else v.clone()
            for k, v in tuned.items()
        }
        path = context.unit_dir(self) / WEIGHTS
        save_weights(mixed, path, {"stage": self.name, "alpha": self.alpha})
        return StageResult(self.name, path)


@STAGE_KINDS.register("test_wise_ft", options=WiseOptions)
def wise_ft(options: WiseOptions, request: StageRequest) -> list[Unit]:
    tuned = request.train(name=f"{request.name}.finetune")
    return [
        tuned,
        Interpolate(
            name=request.name, init=request.init, finetuned=tuned.name, alpha=options.alpha
        ),
    ]


# -- the recipe ----------------------------------------------------------------------------------
STAGES = [
    {"name": "warm", "steps": 2, "sampler": "set_round_robin", "optimizer": {"lr": 1e-2}},
    {
        "name": "wise",
        "steps": 3,
        "sampler": "uniform",
        "optimizer": {"type": "sgd", "lr": 5e-2},
        "kind": {"type": "test_wise_ft", "alpha": 0.25},
    },
]


def test_the_kind_plans_its_own_units() -> None:
    config = make_config(Path("x"), STAGES)
    plans = plan_for_model(config, build_model(config.model))
    assert [(type(p).__name__, p.name, p.init, p.index) for p in plans] == [
        ("StagePlan", "warm", "scratch", 0),
        ("StagePlan", "wise.finetune", "stage:warm", 1),
        ("Interpolate", "wise", "stage:warm", 2),
    ]
    assert isinstance(plans[1], StagePlan) and plans[1].group == "wise"
    assert plans[2].alpha == 0.25 and plans[2].finetuned == "wise.finetune"


@pytest.mark.slow
def test_the_kind_runs_in_a_recipe_and_resumes_after_a_kill(tiny_data: Path, tmp_path: Path):
    config = make_config(tiny_data, STAGES, deterministic=True, checkpoint_every_n_steps=1)
    straight = run_recipe(config, tmp_path / "straight", progress=False)
    assert [(s.name, s.steps) for s in straight.stages] == [
        ("warm", 2),
        ("wise.finetune", 3),
        ("wise", 0),
    ]
    run = tmp_path / "straight" / "stages"
    start = load_weights(run / "00-warm" / WEIGHTS)
    tuned = load_weights(run / "01-wise.finetune" / WEIGHTS)
    final = load_weights(straight.final_weights)
    params = {n for n, _ in build_model(config.model).named_parameters()}
    moved = [n for n in params if not torch.equal(start[n], tuned[n])]
    assert moved  # the fine-tuning unit trained
    for name in moved:  # the kind's unit ran its own code: a quarter of the way to the tuned
        expected = start[name] + 0.25 * (tuned[name] - start[name])
        assert torch.allclose(final[name], expected, atol=1e-6), name
    assert (run / "02-wise" / WEIGHTS).is_file()

    out = tmp_path / "interrupted"
    with pytest.raises(SimulatedKill):  # killed inside the engine-trained unit of the kind
        run_recipe(config, out, progress=False, callbacks=[KillAt("wise.finetune", 2)])
    assert (out / "stages" / "01-wise.finetune" / "checkpoints" / "last.ckpt").is_file()
    KILL_INTERPOLATION["armed"] = True
    with pytest.raises(SimulatedKill):  # resumed, finishes fine-tuning, killed in its own unit
        run_recipe(config, out, resume=True, progress=False)
    assert not (out / "stages" / "02-wise" / WEIGHTS).exists()
    resumed = run_recipe(config, out, resume=True, progress=False)

    assert [(s.name, s.steps) for s in resumed.stages] == [
        (s.name, s.steps) for s in straight.stages
    ]
    for a, b in zip(straight.stages, resumed.stages, strict=True):
        same_weights(a.weights, b.weights)
    same_weights(straight.final_weights, resumed.final_weights)
