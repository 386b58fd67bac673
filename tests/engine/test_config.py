"""Recipe schema validation and every shipped example run config planning cleanly."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from drivemtl.engine.adversarial import AdversarialPlan
from drivemtl.engine.config import RecipeConfig, StageConfig
from drivemtl.engine.plan import MergePlan, PseudoLabelPlan, StagePlan, plan_for_model
from drivemtl.engine.run_config import load_run_config
from drivemtl.models import build_model

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
EXAMPLES = sorted(p for p in CONFIGS.glob("*.yaml") if p.name != "synthetic_tiny_base.yaml")


def test_stage_needs_exactly_one_length() -> None:
    with pytest.raises(ValidationError, match="exactly one of `epochs` or `steps`"):
        StageConfig(name="a")
    with pytest.raises(ValidationError, match="exactly one"):
        StageConfig(name="a", epochs=1, steps=1)
    assert StageConfig(name="a", steps=3).trainable == ["*"]


def test_recipe_names_unique_and_init_refers_back() -> None:
    with pytest.raises(ValidationError, match="used twice"):
        RecipeConfig(stages=[{"name": "a", "steps": 1}, {"name": "a", "steps": 1}])
    with pytest.raises(ValidationError, match="names no earlier stage"):
        RecipeConfig(stages=[{"name": "a", "steps": 1, "init": "stage:b"}])


def test_unknown_key_is_a_config_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("recipe:\n  stages:\n    - {name: a, steps: 1, lerning_rate: 0.1}\n")
    with pytest.raises(ValueError, match="lerning_rate"):
        load_run_config(bad)


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_shipped_examples_plan(path: Path) -> None:
    config = load_run_config(path)
    plans = plan_for_model(config, build_model(config.model))
    assert plans
    if path.stem.startswith("densemtl_uda"):  # VKITTI2 source, images-only target, 8 classes
        (uda,) = plans
        assert isinstance(uda, AdversarialPlan) and uda.sets == ["source"]
        assert uda.adapt == ["semantic", "depth"] and uda.target_data.sets["target"].tasks == []
        classes = config.model.tasks["semantic"].head.get("classes")
        assert (path.stem == "densemtl_uda_synthetic") == (classes is None)  # real: 8 classes
        assert classes is None or len(classes) == 8
    if path.stem == "vtd_cpf":
        check_vtd_cpf(plans, list(config.model.tasks))
    if path.stem == "pretrain_adapt_finetune":
        adapt = plans[0]
        assert isinstance(adapt, StagePlan)
        assert all(n.startswith("neck.") for n in adapt.freeze.trainable)


def check_vtd_cpf(plans: list, model_tasks: list[str]) -> None:
    """VTDNet's CPF (App. H): curriculum (detection + MOT, then instance + pose on a frozen
    network), single-task teachers whose pseudo labels (semantic >= 0.3, joints >= 0.2) join
    round-robin joint training, per-decoder fine-tuning at lr / 10 merged last."""
    names = [p.name for p in plans if p.name.split(".")[0] == p.name]
    assert names == ["curriculum_loc", "curriculum_inst", "teacher_semantic", "teacher_pose",
                     "pseudo_semantic", "pseudo_pose", "joint", "decoders"]  # fmt: skip
    units = {p.name: p for p in plans}
    first, second = units["curriculum_loc"], units["curriculum_inst"]
    assert (first.tasks, first.sets) == (["detection", "mot"], ["detection", "tracking"])
    assert second.tasks == ["instance", "pose"] and second.init == "stage:curriculum_loc"
    frozen = ("backbone.", "neck.", "heads.detection.", "heads.mot.")
    assert not [n for n in second.freeze.trainable if n.startswith(frozen)]
    assert {n.split(".")[1] for n in second.freeze.trainable if n.startswith("heads.")} >= {
        "instance",
        "pose",
    }
    assert all(n in second.freeze.frozen for n in first.freeze.trainable if n.startswith(frozen))
    semantic, pose = units["pseudo_semantic"], units["pseudo_pose"]
    assert isinstance(semantic, PseudoLabelPlan) and isinstance(pose, PseudoLabelPlan)
    assert semantic.teacher == "stage:teacher_semantic" and pose.teacher == "stage:teacher_pose"
    assert semantic.rules["semantic_confidence"] == pytest.approx(0.3)
    assert pose.rules["joint_score"] == pytest.approx(0.2)
    assert semantic.labels == {"detection": ["semantic"], "tracking": ["semantic"]}
    assert pose.labels == {"segmentation": ["pose"], "tracking": ["pose"]}
    joint = units["joint"]
    assert joint.init == "stage:curriculum_inst" and joint.config.sampler == "set_round_robin"
    assert joint.tasks == model_tasks and joint.sets == ["detection", "segmentation", "tracking"]
    lr = joint.config.optimizer.lr
    assert (lr, joint.config.optimizer.weight_decay, joint.config.epochs) == (1e-4, 0.05, 12)
    assert joint.config.schedule.milestones == [8, 11]
    subs = [p for p in plans if isinstance(p, StagePlan) and p.group == "decoders"]
    # every decoder with parameters (MOTS has none), at lr / 10 for 6 epochs, alone
    assert [p.tasks[0] for p in subs] == [t for t in model_tasks if t != "mots"]
    assert all(p.config.optimizer.lr == pytest.approx(lr / 10) for p in subs)
    assert all(p.config.epochs == 6 and p.init == "stage:joint" for p in subs)
    for sub in subs:
        assert all(n.startswith(f"heads.{sub.tasks[0]}.") for n in sub.freeze.trainable)
    merge = plans[-1]
    assert isinstance(merge, MergePlan) and merge.parts == {p.tasks[0]: p.name for p in subs}


def test_a_sets_class_list_must_be_the_models(tmp_path: Path) -> None:
    from drivemtl.config.loader import ConfigError, validate_tree
    from drivemtl.engine.run_config import RunConfig

    remap = {"classes": ["flat", "vehicle"], "map": {"road": "flat", "car": "vehicle"}}
    tree = {
        "model": {"tasks": {"semantic": {"head": {"classes": ["flat", "vehicle"]}}}},
        "data": {"sets": {
            "a": {"root": str(tmp_path), "tasks": ["semantic"], "remap": {"semantic": remap}},
            "b": {"root": str(tmp_path), "tasks": ["semantic"]},
            "c": {"root": str(tmp_path), "tasks": []},
        }},
    }  # fmt: skip
    with pytest.raises(ConfigError, match=r"data.sets.b: its semantic classes \['road'"):
        validate_tree(tree, {}, RunConfig, "<test>")
    del tree["data"]["sets"]["b"]
    config = validate_tree(tree, {}, RunConfig, "<test>")
    assert config.data.sets["a"].classes_of("semantic") == ("flat", "vehicle")
