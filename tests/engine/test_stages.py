"""Freezing by glob patterns, optimiser parameter groups and lr schedules against hand values."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from drivemtl.engine.stages import (
    FreezeError,
    StepScheduleOptions,
    apply_freezing,
    build_optimizer,
    build_scheduler,
    freeze_norm_statistics,
    lr_factor_fn,
    no_decay_names,
    plan_freezing,
)


class Toy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
        self.neck = nn.Conv2d(4, 4, 1)
        self.heads = nn.ModuleDict({"semantic": nn.Conv2d(4, 2, 1), "depth": nn.Conv2d(4, 1, 1)})


def names(model: nn.Module) -> list[str]:
    return [n for n, _ in model.named_parameters()]


def test_plan_trainable_minus_frozen() -> None:
    model = Toy()
    plan = plan_freezing(names(model), ["*"], ["backbone.*", "heads.*"])
    assert plan.trainable == ("neck.weight", "neck.bias")
    assert set(plan.frozen) == set(names(model)) - {"neck.weight", "neck.bias"}
    apply_freezing(model, plan)
    assert [n for n, p in model.named_parameters() if p.requires_grad] == list(plan.trainable)


def test_plan_errors_name_the_pattern() -> None:
    all_names = names(Toy())
    with pytest.raises(FreezeError, match=r"trainable pattern 'adapter\.\*' matches no parameter"):
        plan_freezing(all_names, ["adapter.*"], [])
    # 'heads.depth.*' exists but the trainable patterns never selected it: it freezes nothing
    with pytest.raises(
        FreezeError, match=r"frozen pattern 'heads\.depth\.\*' freezes no parameter"
    ):
        plan_freezing(all_names, ["heads.semantic.*"], ["heads.depth.*"])
    with pytest.raises(FreezeError, match="leaves nothing"):
        plan_freezing(all_names, ["neck.*"], ["neck.*"])


def test_frozen_norm_layers_keep_running_stats() -> None:
    model = Toy()
    apply_freezing(model, plan_freezing(names(model), ["*"], ["backbone.*"]))
    model.train()
    assert freeze_norm_statistics(model) == ["backbone.1"]
    before = model.backbone[1].running_mean.clone()
    model.backbone(torch.randn(2, 3, 8, 8))
    assert torch.equal(model.backbone[1].running_mean, before)


def test_optimizer_groups_and_types() -> None:
    model = Toy()
    exempt = no_decay_names(model)
    assert exempt == {
        "backbone.0.bias",
        "backbone.1.weight",
        "backbone.1.bias",
        "neck.bias",
        "heads.semantic.bias",
        "heads.depth.bias",
    }
    apply_freezing(model, plan_freezing(names(model), ["*"], ["heads.depth.*"]))
    opt = build_optimizer(list(model.named_parameters()), {"type": "adamw", "lr": 0.1}, exempt)
    assert isinstance(opt, torch.optim.AdamW)
    decay, no_decay = opt.param_groups
    assert decay["weight_decay"] == 1e-4 and no_decay["weight_decay"] == 0.0
    assert len(decay["params"]) == 3 and len(no_decay["params"]) == 5  # depth head excluded
    sgd = build_optimizer(
        list(model.named_parameters()),
        {"type": "sgd", "lr": 0.01, "momentum": 0.5, "decay_norm_and_bias": True},
        exempt,
    )
    assert isinstance(sgd, torch.optim.SGD) and len(sgd.param_groups) == 1
    assert sgd.param_groups[0]["momentum"] == 0.5


def test_lr_scale_gives_matching_parameters_their_own_learning_rate() -> None:
    model = Toy()
    named = list(model.named_parameters())
    cfg = {"type": "adamw", "lr": 1e-4, "lr_scale": {"backbone.*": 0.1}}
    opt = build_optimizer(named, cfg, no_decay_names(model))
    ids = {id(p): n for n, p in named}
    by_group = [
        (g["lr"], g["weight_decay"], sorted(ids[id(p)] for p in g["params"]))
        for g in opt.param_groups
    ]
    assert by_group == [
        (pytest.approx(1e-5), 1e-4, ["backbone.0.weight"]),
        (pytest.approx(1e-5), 0.0, ["backbone.0.bias", "backbone.1.bias", "backbone.1.weight"]),
        (1e-4, 1e-4, ["heads.depth.weight", "heads.semantic.weight", "neck.weight"]),
        (1e-4, 0.0, ["heads.depth.bias", "heads.semantic.bias", "neck.bias"]),
    ]
    with pytest.raises(FreezeError, match=r"lr_scale: \['encoder\.\*'\] match no trainable"):
        build_optimizer(named, {**cfg, "lr_scale": {"encoder.*": 0.1}})


@pytest.mark.parametrize(
    ("cfg", "step", "expected"),
    [
        ({"type": "constant"}, 7, 1.0),
        ({"type": "step", "milestones": [2, 3], "gamma": 0.1}, 19, 1.0),
        ({"type": "step", "milestones": [2, 3], "gamma": 0.1}, 20, 0.1),
        ({"type": "step", "milestones": [2, 3], "gamma": 0.1}, 35, 0.01),
        ({"type": "poly", "power": 0.9}, 50, 0.5**0.9),
        ({"type": "poly", "power": 1.0, "min_lr_factor": 0.2}, 25, 0.2 + 0.8 * 0.75),
        ({"type": "cosine"}, 25, 0.5 * (1 + math.cos(math.pi * 0.25))),
        ({"type": "cosine"}, 100, 0.0),
        # linear warm-up from 0.1 over 10 steps, multiplied with the main schedule
        ({"type": "constant", "warmup_steps": 10, "warmup_factor": 0.1}, 0, 0.1),
        ({"type": "constant", "warmup_steps": 10, "warmup_factor": 0.1}, 5, 0.55),
        ({"type": "constant", "warmup_steps": 10, "warmup_factor": 0.1}, 10, 1.0),
    ],
)
def test_lr_factor_values(cfg: dict, step: int, expected: float) -> None:
    # 100 steps in the stage; step milestones given in epochs of 10 steps
    assert lr_factor_fn(cfg, total_steps=100, steps_per_unit=10)(step) == pytest.approx(expected)


def test_scheduler_drives_optimizer_lr() -> None:
    param = nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=1.0)
    sched = build_scheduler(opt, {"type": "poly", "power": 1.0}, total_steps=4)
    seen = []
    for _ in range(4):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert seen == pytest.approx([1.0, 0.75, 0.5, 0.25])


def test_schedule_rejects_unsorted_milestones() -> None:
    with pytest.raises(ValueError, match="increasing"):
        StepScheduleOptions(type="step", milestones=[3, 2])


def test_fixed_parameters_are_never_trained() -> None:
    all_names = names(Toy())
    fixed = {"backbone.0.weight", "backbone.0.bias"}  # e.g. backbone.frozen_stages
    plan = plan_freezing(all_names, ["*"], [], fixed=fixed)
    assert set(plan.trainable) == set(all_names) - fixed
    assert set(plan.fixed) == fixed and fixed <= set(plan.frozen)
    # a pattern reaching fixed and other parameters trains only the others
    plan = plan_freezing(all_names, ["backbone.*"], [], fixed=fixed)
    assert plan.trainable == ("backbone.1.weight", "backbone.1.bias")
    # a frozen pattern over fixed parameters only is redundant, not wrong
    plan = plan_freezing(all_names, ["*"], ["backbone.0.*"], fixed=fixed)
    assert set(plan.trainable) == set(all_names) - fixed
    with pytest.raises(
        FreezeError,
        match=r"trainable pattern 'backbone\.0\.\*' matches only parameters the model keeps "
        r"frozen itself \(2 tensors, e\.g\. backbone\.0\.weight; .*frozen_stages\)",
    ):
        plan_freezing(all_names, ["neck.*", "backbone.0.*"], [], fixed=fixed)
    with pytest.raises(FreezeError, match="and the parameters the model keeps frozen leaves"):
        plan_freezing(all_names, ["backbone.*"], ["backbone.1.*"], fixed=fixed)


def test_apply_freezing_refuses_to_train_what_the_model_keeps_frozen() -> None:
    class Fixed(Toy):
        def fixed_parameter_names(self) -> set[str]:
            return {"neck.weight"}

    model = Fixed()
    with pytest.raises(FreezeError, match=r"trains 1 parameters the model keeps frozen"):
        apply_freezing(model, plan_freezing(names(model), ["*"], []))
    apply_freezing(model, plan_freezing(names(model), ["*"], [], fixed={"neck.weight"}))
    assert not model.neck.weight.requires_grad and model.neck.bias.requires_grad


def test_aliases_stand_for_several_globs_as_one_pattern() -> None:
    all_names = names(Toy())
    aliases = {"@decoder": ["heads.semantic.*", "heads.depth.*"], "@adapter": ["adapters.0.*"]}
    plan = plan_freezing(all_names, ["*"], ["@decoder"], aliases=aliases)
    assert not any(n.startswith("heads.") for n in plan.trainable)
    assert len(plan.trainable) == len(all_names) - 4
    with pytest.raises(FreezeError, match="trainable pattern '@adapter' matches no parameter"):
        plan_freezing(all_names, ["@adapter"], [], aliases=aliases)


def test_per_decoder_skips_a_decoder_without_parameters() -> None:
    from types import SimpleNamespace

    from drivemtl.engine.stages import PerDecoderOptions, per_decoder

    trained: list[str] = []
    request = SimpleNamespace(
        tasks=["mot", "mots"],
        name="finetune",
        where="recipe.stages[3]",
        parameter_names=["heads.mot.fc.weight", "backbone.conv1.weight"],
        decoder_prefixes=lambda task: [f"heads.{task}."],
        labelled_sets=lambda task: ["tracking"],
        train=lambda name, tasks, **kw: trained.append(name) or name,
        merge=lambda parts: ("merge", dict(parts)),
    )
    units = per_decoder(PerDecoderOptions(type="per_decoder"), request)  # type: ignore[arg-type]
    assert trained == ["finetune.mot"]
    assert units[-1] == ("merge", {"mot": "finetune.mot"})
