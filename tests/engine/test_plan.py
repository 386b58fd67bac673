"""Planning a recipe against a real (tiny) model: `@KIND` patterns, parameters the model keeps
frozen itself, and stage kinds as `type` + options plug-ins (the shipped ones and one registered
here that drives a real two-unit stage)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from engine_fixtures import make_config, tiny_model
from pydantic import Field

from drivemtl.config.loader import ConfigError, validate_tree
from drivemtl.engine.checkpoint import load_weights, save_weights
from drivemtl.engine.plan import MergePlan, RecipeError, StagePlan, StageRequest, plan_for_model
from drivemtl.engine.run_config import RunConfig, load_run_config
from drivemtl.engine.stages import STAGE_KINDS, PerDecoderOptions, StageKindOptions
from drivemtl.engine.trainer import run_recipe
from drivemtl.models import build_model


def plan(stages: list[dict[str, Any]], model: dict[str, Any] | None = None) -> list[Any]:
    """The plans of `stages` over a (never read) data root, for the tiny or the given model."""
    config = make_config(Path("x"), stages, model=model)
    return plan_for_model(config, build_model(config.model))


def trained(stage: dict[str, Any], model: dict[str, Any] | None = None) -> set[str]:
    (only,) = plan([{"name": "a", "steps": 1, **stage}], model)
    assert isinstance(only, StagePlan)
    return set(only.freeze.trainable)


def parameter_names() -> set[str]:
    config = make_config(Path("x"), [{"name": "a", "steps": 1}])
    return {n for n, _ in build_model(config.model).named_parameters()}


ALL = parameter_names()


def starting(*prefixes: str) -> set[str]:
    return {n for n in ALL if n.startswith(prefixes)}


# -- @KIND patterns -------------------------------------------------------------------------------
def test_kind_patterns_expand_to_the_models_stages() -> None:
    assert trained({"trainable": ["@neck"]}) == starting("neck.")
    assert trained({"trainable": ["@neck", "@decoder"]}) == starting("neck.", "heads.")
    # the adapt stage of pretrain-adapt-finetune, written with kinds and with globs
    by_kind = trained({"frozen": ["@backbone", "@decoder"]})
    assert by_kind == trained({"frozen": ["backbone.*", "heads.*"]}) == starting("neck.")
    # kinds and globs mix
    assert trained({"trainable": ["@decoder"], "frozen": ["heads.tagging.*"]}) == starting(
        "heads.semantic."
    )


def test_kind_without_stage_or_unknown_kind_is_an_error_listing_the_models_kinds() -> None:
    kinds = r"this model's stage kinds: @backbone, @neck, @decoder, @predictor"
    with pytest.raises(
        RecipeError,
        match=rf"recipe stage 'a': pattern '@adapter': this model has no adapter stage; {kinds}",
    ):
        trained({"trainable": ["@neck", "@adapter"]})
    with pytest.raises(
        RecipeError,
        match=r"pattern '@heads': 'heads' is no stage kind \(kinds: backbone, neck, adapter, "
        rf"group, interaction, decoder, exchange, predictor\); {kinds}",
    ):
        trained({"frozen": ["@heads"]})
    with pytest.raises(RecipeError, match=r"frozen pattern '@decoder' freezes no parameter"):
        trained({"trainable": ["@neck"], "frozen": ["@decoder"]})


# -- parameters the model keeps frozen -----------------------------------------------------------
def frozen_stages(k: int) -> dict[str, Any]:
    model = tiny_model()
    model["backbone"] = {**model["backbone"], "frozen_stages": k}
    return model


def test_plans_never_train_what_the_model_keeps_frozen() -> None:
    net = build_model(make_config(Path("x"), [{"name": "a", "steps": 1}], frozen_stages(1)).model)
    fixed = net.fixed_parameter_names()
    assert fixed == starting("backbone.conv1.", "backbone.bn1.", "backbone.layer1.")
    assert trained({}, frozen_stages(1)) == ALL - fixed
    assert trained({"trainable": ["@backbone"]}, frozen_stages(1)) == starting("backbone.") - fixed
    with pytest.raises(
        RecipeError,
        match=r"recipe stage 'a': trainable pattern 'backbone\.layer1\.\*' matches only "
        r"parameters the model keeps frozen itself \(\d+ tensors, e\.g\. backbone\.layer1\.",
    ):
        trained({"trainable": ["@neck", "backbone.layer1.*"]}, frozen_stages(1))
    with pytest.raises(RecipeError, match=r"'@backbone' matches only parameters the model keeps"):
        trained({"trainable": ["@backbone", "@neck"]}, frozen_stages(4))


# -- stage kinds ---------------------------------------------------------------------------------
def support_config(stages: list[dict[str, Any]]) -> RunConfig:
    """Semantic + instance (whose loss needs the detection head: a support head)."""
    model = tiny_model()
    model["tasks"] = {
        "semantic": {"head": {"channels": 16}},
        "instance": {"head": {"channels": 16}},
    }
    tree = {
        "model": model,
        "data": {"sets": {"seg": {"root": "seg", "tasks": ["semantic"]},
                          "ins": {"root": "ins", "tasks": ["instance"]}}},
        "recipe": {"stages": stages},
    }  # fmt: skip
    return validate_tree(tree, {}, RunConfig, "<test>")


@pytest.mark.parametrize("include_support", [True, False])
def test_per_decoder_kind_expands_into_one_unit_per_task_and_a_merge(
    include_support: bool,
) -> None:
    config = support_config(
        [
            {"name": "joint", "steps": 1},
            {
                "name": "dec",
                "steps": 1,
                "kind": {"type": "per_decoder", "include_support": include_support},
            },
        ]
    )
    net = build_model(config.model)
    plans = plan_for_model(config, net)
    assert [p.name for p in plans] == ["joint", "dec.semantic", "dec.instance", "dec"]
    assert [p.index for p in plans if isinstance(p, StagePlan)] == [0, 1, 2]
    joint, semantic, instance, merge = plans
    names = {n for n, _ in net.named_parameters()}
    assert set(semantic.freeze.trainable) == {n for n in names if n.startswith("heads.semantic.")}
    heads = ("heads.instance.", "heads.detection.") if include_support else ("heads.instance.",)
    assert set(instance.freeze.trainable) == {n for n in names if n.startswith(heads)}
    assert (semantic.sets, instance.sets) == (["seg"], ["ins"])
    assert (semantic.group, instance.group, joint.group) == ("dec", "dec", None)
    assert semantic.init == instance.init == "stage:joint"
    assert isinstance(merge, MergePlan) and merge.init == "stage:joint"
    assert merge.parts == {"semantic": "dec.semantic", "instance": "dec.instance"}


class AlternateOptions(StageKindOptions):
    trainable_per_unit: list[list[str]] = Field(min_length=1)


@STAGE_KINDS.register("test_alternate", options=AlternateOptions)
def alternate(options: AlternateOptions, request: StageRequest) -> list[StagePlan | MergePlan]:
    """Units trained one after the other, each from the previous one's weights, unit k training
    `trainable_per_unit[k]`; the last unit is the stage's result and carries its name."""
    units: list[StagePlan | MergePlan] = []
    count = len(options.trainable_per_unit)
    for k, trainable in enumerate(options.trainable_per_unit):
        name = request.name if k == count - 1 else f"{request.name}.{k}"
        init = f"stage:{units[-1].name}" if units else None
        units.append(request.train(name=name, trainable=trainable, frozen=[], init=init))
    return units


def test_new_stage_kind_plans_and_its_errors() -> None:
    stages = [
        {
            "name": "alt",
            "steps": 1,
            "kind": {"type": "test_alternate", "trainable_per_unit": [["@neck"], ["@decoder"]]},
        },
        {"name": "after", "steps": 1},
    ]
    plans = plan(stages)
    assert [(p.name, p.init, p.index) for p in plans] == [
        ("alt.0", "scratch", 0),
        ("alt", "stage:alt.0", 1),
        ("after", "stage:alt", 2),
    ]
    assert set(plans[0].freeze.trainable) == starting("neck.")
    assert set(plans[1].freeze.trainable) == starting("heads.")
    with pytest.raises(ValueError, match=r"trainable_per_unit"):
        plan([{**stages[0], "kind": {"type": "test_alternate"}}])
    with pytest.raises(RecipeError, match=r"pattern '@group': this model has no group stage"):
        plan(
            [{**stages[0], "kind": {"type": "test_alternate", "trainable_per_unit": [["@group"]]}}]
        )


@STAGE_KINDS.register("test_misnamed", options=StageKindOptions)
def misnamed(options: StageKindOptions, request: StageRequest) -> list[StagePlan | MergePlan]:
    return [request.train(name=f"{request.name}.only")]


def test_a_kind_whose_last_plan_is_not_the_stage_is_an_error() -> None:
    with pytest.raises(RecipeError, match=r"the stage's result must be its last plan, named 'a'"):
        plan([{"name": "a", "steps": 1, "kind": {"type": "test_misnamed"}}])


@pytest.mark.slow
def test_new_stage_kind_trains_its_units_one_after_the_other(
    tiny_data: Path, tmp_path: Path
) -> None:
    start = tmp_path / "start.safetensors"
    stages = [
        {
            "name": "alt",
            "steps": 2,
            "sampler": "set_round_robin",
            "init": str(start),
            "optimizer": {"lr": 1e-2},
            "kind": {"type": "test_alternate", "trainable_per_unit": [["@neck"], ["@decoder"]]},
        }
    ]
    config = make_config(tiny_data, stages)
    save_weights(build_model(config.model), start)
    result = run_recipe(config, tmp_path / "run", progress=False)
    assert [(s.name, s.steps) for s in result.stages] == [("alt.0", 2), ("alt", 2)]
    w0, first, second = load_weights(start), *(load_weights(s.weights) for s in result.stages)
    final = load_weights(result.final_weights)

    def same(a: dict, b: dict, prefix: str) -> bool:
        keys = [k for k in a if k.startswith(prefix)]
        return bool(keys) and all(torch.equal(a[k], b[k]) for k in keys)

    # unit 0 trains the neck only; unit 1 starts from unit 0 and trains the decoders only
    assert not same(w0, first, "neck.") and same(w0, first, "heads.")
    assert same(first, second, "neck.") and not same(first, second, "heads.")
    assert same(w0, second, "backbone.")
    assert all(torch.equal(final[k], second[k]) for k in second)


def test_old_per_decoder_flag_is_an_unknown_key_that_lists_kind(tmp_path: Path) -> None:
    path = tmp_path / "old.yaml"
    path.write_text("recipe:\n  stages:\n    - {name: a, steps: 1, per_decoder: true}\n")
    with pytest.raises(
        ConfigError, match=r"unknown key 'recipe\.stages\.0\.per_decoder'.*expected one of: .*kind"
    ):
        load_run_config(path)
    path.write_text("recipe:\n  stages:\n    - {name: a, steps: 1, kind: {type: per_decoder}}\n")
    assert load_run_config(path).recipe.stages[0].kind == PerDecoderOptions(type="per_decoder")
