"""The `uda_adversarial` stage kind plans one adversarial unit whose target domain is read as
images only; bad target sets and tasks are one-line recipe errors naming what is wrong."""

from __future__ import annotations

from pathlib import Path

import pytest
from engine_fixtures import make_config

from drivemtl.config.loader import ConfigError
from drivemtl.engine.adversarial import AdversarialPlan, adaptable
from drivemtl.engine.plan import plan_for_model
from drivemtl.models import build_model


def _stage(**kind) -> dict:
    return {
        "name": "uda",
        "steps": 2,
        "tasks": ["semantic"],
        "sets": ["seg"],
        "kind": {"type": "uda_adversarial", "target_sets": ["tag"], **kind},
    }


def _plan(**kind):
    config = make_config(Path("x"), [_stage(**kind)])
    return plan_for_model(config, build_model(config.model))


def test_the_kind_plans_one_unit_with_an_images_only_target() -> None:
    (plan,) = _plan(lambda_adv=0.01, task_lambda={"semantic": 0.02})
    assert isinstance(plan, AdversarialPlan)
    assert (plan.name, plan.tasks, plan.sets, plan.adapt) == (
        "uda",
        ["semantic"],
        ["seg"],
        ["semantic"],
    )
    assert plan.target_sets == ["tag"]
    assert plan.target_data is not None and list(plan.target_data.sets) == ["tag"]
    assert plan.target_data.sets["tag"].tasks == []  # its tagging labels are never read
    assert plan.target_labels == {"tag": ["tagging"]}
    assert plan.options.weight("semantic") == 0.02


def test_without_sets_the_source_is_every_set_but_the_targets() -> None:
    config = make_config(Path("x"), [{k: v for k, v in _stage().items() if k != "sets"}])
    (plan,) = plan_for_model(config, build_model(config.model))
    assert plan.sets == ["seg"] and plan.target_sets == ["tag"]
    assert list(plan.data.sets) == ["seg"]


def test_which_tasks_can_be_adapted() -> None:
    assert [t for t in ("semantic", "depth", "normals", "edges", "drivable") if adaptable(t)] == [
        "semantic", "depth", "normals", "edges", "drivable",
    ]  # fmt: skip
    assert not adaptable("tagging") and not adaptable("detection") and not adaptable("nope")


def _with_third_set(config):
    """The config with a third image set `fog` (the `seg` frames again), a target for stages
    that train on both `seg` and `tag`."""
    data = config.data.model_copy(deep=True)
    data.sets["fog"] = data.sets["seg"].model_copy()
    return config.model_copy(update={"data": data})


BOTH = {"tasks": ["semantic", "tagging"], "sets": ["seg", "tag"]}


@pytest.mark.parametrize(
    ("kind", "stage", "message"),
    [
        ({"target_sets": ["ice"]}, {}, r"target_sets \['ice'\] are not image sets of the data"),
        ({"target_sets": ["seg"]}, {}, r"sets \['seg'\] are both source"),
        ({"adapt": ["depth"]}, {}, r"kind.adapt names \['depth'\], which the stage does not train"),
        ({"task_lambda": {"depth": 1.0}}, {}, r"task_lambda names \['depth'\]"),
        ({"target_sets": ["fog"], "adapt": ["tagging"]}, BOTH, r"tasks \['tagging'\] give no output map"),
        ({"target_sets": ["fog"]}, {"tasks": ["tagging"], "sets": ["tag"]},
         r"none of the stage's tasks \['tagging'\]"),
    ],
)  # fmt: skip
def test_bad_adversarial_stages_are_recipe_errors(kind: dict, stage: dict, message: str) -> None:
    spec = {**_stage(**kind), **stage}
    config = _with_third_set(make_config(Path("x"), [spec]))
    with pytest.raises(ConfigError, match=message):
        plan_for_model(config, build_model(config.model))
