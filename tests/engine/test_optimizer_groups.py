"""A supervised stage with several optimisers (`kind: {type: supervised, optimizers: [...]}`):
planning splits the trained parameters among the groups, the stage runs Lightning's manual
optimisation, which reproduces automatic optimisation bit for bit when the groups use the same
optimiser, steps each group with its own optimiser and lr, and resumes exactly."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import pytest
import torch
from engine_fixtures import KillAt, SimulatedKill, make_config, same_weights

from drivemtl.config.loader import ConfigError, dump_config
from drivemtl.engine.checkpoint import load_weights, save_weights
from drivemtl.engine.plan import RecipeError, StagePlan, plan_for_model
from drivemtl.engine.run_config import load_run_config
from drivemtl.engine.stages import AdamWOptions, SGDOptions
from drivemtl.engine.trainer import run_recipe
from drivemtl.models import build_model


def supervised(*groups: dict[str, Any]) -> dict[str, Any]:
    return {"type": "supervised", "optimizers": list(groups)}


def only_plan(stage: dict[str, Any]) -> StagePlan:
    config = make_config(Path("x"), [{"name": "a", "steps": 1, **stage}])
    (plan,) = plan_for_model(config, build_model(config.model))
    assert isinstance(plan, StagePlan)
    return plan


def test_groups_take_the_trained_parameters_their_patterns_match_first_match_wins() -> None:
    plan = only_plan(
        {
            "kind": supervised(
                {"params": ["heads.semantic.*"], "type": "sgd", "lr": 0.1, "momentum": 0.5},
                {"params": ["@decoder", "@neck"], "lr": 1e-3},
            ),
            "frozen": ["@backbone"],
        }
    )
    first, second = plan.optimizers
    assert first.names and all(n.startswith("heads.semantic.") for n in first.names)
    assert isinstance(first.options, SGDOptions) and first.options.momentum == 0.5
    assert set(second.names) == {
        n for n in plan.freeze.trainable if n.startswith(("heads.tagging.", "neck."))
    }
    assert isinstance(second.options, AdamWOptions) and second.options.lr == 1e-3
    assert set(first.names) | set(second.names) == set(plan.freeze.trainable)
    assert only_plan({}).optimizers == []  # one optimiser: automatic optimisation


def test_group_errors_and_the_written_form(tmp_path: Path) -> None:
    nothing = r"optimizers\[0\] \(params \['@backbone'\]\) steps no parameter: none is trained"
    with pytest.raises(RecipeError, match=nothing):
        only_plan({"kind": supervised({"params": ["@backbone"]}), "frozen": ["@backbone"]})
    with pytest.raises(RecipeError, match=r"optimizers\[1\] .* earlier groups took all it matches"):
        only_plan({"kind": supervised({"params": ["@neck"]}, {"params": ["neck.*"]})})
    with pytest.raises(RecipeError, match=r"pattern '@adapter': this model has no adapter stage"):
        only_plan({"kind": supervised({"params": ["@adapter"]})})

    def config(*groups: dict[str, Any]) -> Any:
        return make_config(Path("x"), [{"name": "a", "steps": 1, "kind": supervised(*groups)}])

    with pytest.raises(ConfigError, match=r"recipe\.stages\.0\.kind\.optimizers\.0\.params"):
        config({"lr": 0.1})
    with pytest.raises(ConfigError, match=r"unknown optimizer 'adam'"):
        config({"params": ["*"], "type": "adam"})
    # the resolved config keeps the flat form and reads back to the same options
    written = config({"params": ["@neck"], "type": "sgd", "lr": 0.1})
    text = dump_config(written, tmp_path / "run.yaml")
    assert "- params:\n        - '@neck'\n        type: sgd\n        lr: 0.1\n" in text
    assert load_run_config(tmp_path / "run.yaml").recipe == written.recipe


STAGE = {
    "name": "a",
    "steps": 3,
    "sampler": "set_round_robin",
    "optimizer": {"lr": 1e-2},
    "schedule": {"type": "cosine", "warmup_steps": 1},
    "loss_weighting": {"type": "uncertainty"},  # parameters of its own: the stage's optimiser
}


def lr_columns(run: Path) -> dict[str, list[float]]:
    path = run / "stages" / "00-a" / "logs" / "csv" / "version_0" / "metrics.csv"
    columns: dict[str, list[float]] = {}
    with path.open() as handle:
        for row in csv.DictReader(handle):
            for key, value in row.items():
                if key.startswith("lr-") and value:
                    columns.setdefault(key, []).append(float(value))
    return columns


@pytest.mark.slow
def test_manual_optimisation_with_the_same_optimiser_per_group_equals_automatic(
    tiny_data: Path, tmp_path: Path
) -> None:
    config = make_config(tiny_data, [STAGE], deterministic=True)
    automatic = run_recipe(config, tmp_path / "automatic", progress=False)
    split = {**STAGE, "kind": supervised({"params": ["@decoder"], "lr": 1e-2})}
    config = make_config(tiny_data, [split], deterministic=True)
    manual = run_recipe(config, tmp_path / "manual", progress=False)
    same_weights(automatic.final_weights, manual.final_weights)
    assert manual.stages[0].steps == automatic.stages[0].steps == 3
    lrs = lr_columns(tmp_path / "manual")
    assert set(lrs) == {"lr-AdamW/pg1", "lr-AdamW/pg2", "lr-AdamW-1/pg1", "lr-AdamW-1/pg2"}
    reference = lr_columns(tmp_path / "automatic")["lr-AdamW/pg1"]
    assert reference == pytest.approx([1e-5, 7.5e-3, 2.5e-3])  # cosine after one warm-up step
    assert lrs["lr-AdamW/pg1"] == lrs["lr-AdamW-1/pg1"] == reference


@pytest.mark.slow
def test_each_group_steps_with_its_own_lr(tiny_data: Path, tmp_path: Path) -> None:
    # Adam's first update is lr * g / (|g| + eps): every parameter moves by at most its group's
    # lr, and the largest moves are the lr itself
    start = tmp_path / "start.safetensors"
    stage = {
        "name": "a",
        "steps": 1,
        "sampler": "set_round_robin",
        "init": str(start),
        "optimizer": {"lr": 1e-3, "weight_decay": 0.0},
        "kind": supervised({"params": ["@decoder"], "lr": 1e-2, "weight_decay": 0.0}),
    }
    config = make_config(tiny_data, [stage])
    model = build_model(config.model)
    save_weights(model, start)
    result = run_recipe(config, tmp_path / "run", progress=False)
    before, after = load_weights(start), load_weights(result.final_weights)
    for prefix, lr in (("heads.", 1e-2), (("backbone.", "neck."), 1e-3)):
        names = [n for n, _ in model.named_parameters() if n.startswith(prefix)]
        moves = torch.cat([(after[n] - before[n]).abs().flatten() for n in names])
        assert moves.max().item() == pytest.approx(lr, rel=1e-3), prefix
        assert moves.max().item() <= lr * (1 + 1e-4), prefix


@pytest.mark.slow
def test_several_optimisers_resume_exactly(tiny_data: Path, tmp_path: Path) -> None:
    stage = {
        **STAGE,
        "steps": 4,
        "grad_clip": 0.5,
        "kind": supervised({"params": ["@decoder"], "type": "sgd", "lr": 0.05, "momentum": 0.9}),
    }
    config = make_config(tiny_data, [stage], deterministic=True, checkpoint_every_n_steps=1)
    straight = run_recipe(config, tmp_path / "straight", progress=False)
    out = tmp_path / "interrupted"
    with pytest.raises(SimulatedKill):
        run_recipe(config, out, progress=False, callbacks=[KillAt("a", 2)])
    resumed = run_recipe(config, out, resume=True, progress=False)
    same_weights(straight.final_weights, resumed.final_weights)
    assert resumed.stages[0].steps == straight.stages[0].steps == 4
    assert {"lr-SGD/pg1", "lr-AdamW/pg1"} <= set(lr_columns(tmp_path / "straight"))
