"""Pseudo-labelling as a stage of a recipe: teacher -> pseudo_label stage -> student runs as one
`drivemtl train`; killed in each of the three stages and resumed it ends bit-identical to the
uninterrupted run; the stage writes exactly what `write_pseudo_labels` (`drivemtl pseudo-label`)
writes for the same teacher; the student reads them; bad `{stage: NAME}` sources and bad
pseudo_label stages are errors before anything trains."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import typer
import yaml
from engine_fixtures import KillAt, SimulatedKill, make_config, same_weights
from typer.testing import CliRunner

from drivemtl.cli.train import train
from drivemtl.config import dump_config
from drivemtl.config.loader import ConfigError
from drivemtl.data import build_dataset
from drivemtl.engine import pseudo_label
from drivemtl.engine.plan import PseudoLabelPlan, RecipeError, StagePlan, plan_for_model
from drivemtl.engine.pseudo_label import PseudoLabelRules, write_pseudo_labels
from drivemtl.engine.run_config import load_run_config
from drivemtl.engine.trainer import run_recipe
from drivemtl.models import build_model
from drivemtl.structures.batch import collate

TEACHER = {"name": "teacher", "steps": 3, "sampler": "set_round_robin", "optimizer": {"lr": 1e-2}}
LABELS = {
    "name": "labels",
    "kind": {"type": "pseudo_label", "semantic_confidence": 0.35},
    "tasks": ["semantic", "tagging"],  # each set only for the task it lacks (skip_labelled)
    "batch_size": 3,
}
STUDENT = {
    "name": "student",
    "steps": 3,
    "sampler": "set_round_robin",
    "optimizer": {"type": "sgd", "lr": 1e-2},
    "pseudo_labels": [{"stage": "labels"}],
}
STAGES = [TEACHER, LABELS, STUDENT]
LABEL_DIR = Path("stages/01-labels/pseudo_labels")


def files(root: Path) -> dict[str, bytes]:
    """Relative path -> bytes of every file under `root`."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def straight(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(config YAML, run directory) of the uninterrupted run, trained by `drivemtl train`."""
    root = tmp_path_factory.mktemp("straight")
    config_path = root / "run.yaml"
    config = make_config(tiny_data, STAGES, deterministic=True, checkpoint_every_n_steps=1)
    dump_config(config, config_path)
    app = typer.Typer()
    app.command("train")(train)  # the only command: invoked without its name
    args = [str(config_path), "--out", str(root / "run"), "--no-progress"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    return config_path, root / "run"


@pytest.mark.slow
def test_teacher_pseudo_label_student_resumes_bit_identically_from_a_kill_in_each_stage(
    straight: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config_path, run = straight
    config = load_run_config(config_path)
    out = tmp_path / "interrupted"

    with pytest.raises(SimulatedKill):  # in the teacher
        run_recipe(config, out, progress=False, callbacks=[KillAt("teacher", 2)])

    calls = {"n": 0}
    write_masks = pseudo_label.write_mask_labels

    def dying(*args: Any, **kwargs: Any) -> None:
        calls["n"] += 1
        if calls["n"] == 11:  # set `seg` done (8 frames), 2 frames of set `tag` written
            raise SimulatedKill("killed while pseudo-labelling")
        write_masks(*args, **kwargs)

    monkeypatch.setattr(pseudo_label, "write_mask_labels", dying)
    with pytest.raises(SimulatedKill):  # resumed: the teacher finishes, killed while labelling
        run_recipe(config, out, resume=True, progress=False)
    partial = out / "stages" / "01-labels" / "pseudo_labels.partial" / "tag" / "masks"
    assert len(list(partial.rglob("*.png"))) == 2
    assert not (out / LABEL_DIR).exists()
    monkeypatch.undo()

    with pytest.raises(SimulatedKill):  # resumed: labelling starts over, killed in the student
        run_recipe(config, out, resume=True, progress=False, callbacks=[KillAt("student", 1)])
    assert not (out / "stages" / "01-labels" / "pseudo_labels.partial").exists()
    resumed = run_recipe(config, out, resume=True, progress=False)

    assert [(s.name, s.steps) for s in resumed.stages] == [
        ("teacher", 3),
        ("labels", 0),
        ("student", 3),
    ]
    for name in ("00-teacher", "01-labels", "02-student"):
        weights = Path("stages") / name / "weights.safetensors"
        same_weights(run / weights, out / weights)
    same_weights(run / "final.safetensors", resumed.final_weights)
    straight_labels, resumed_labels = files(run / LABEL_DIR), files(out / LABEL_DIR)
    card = "pseudo_labels.yaml"
    assert straight_labels.pop(card) != resumed_labels.pop(card)  # the teacher paths differ ...
    assert straight_labels == resumed_labels  # ... every label file is the same


@pytest.mark.slow
def test_the_stage_writes_what_write_pseudo_labels_writes_and_the_student_reads_it(
    straight: tuple[Path, Path], tmp_path: Path
) -> None:
    config_path, run = straight
    config = load_run_config(config_path)
    teacher = run / "stages" / "00-teacher" / "weights.safetensors"
    # the pseudo-label stage passes its start point (the teacher) on unchanged
    same_weights(teacher, run / "stages" / "01-labels" / "weights.safetensors")

    rules = PseudoLabelRules(semantic_confidence=0.35)
    for set_name, task in (("tag", "semantic"), ("seg", "tagging")):
        out = tmp_path / set_name
        write_pseudo_labels(config, teacher, [set_name], [task], out, rules, batch_size=3)
        expected = files(out / set_name)
        assert expected == files(run / LABEL_DIR / set_name), set_name
    card = yaml.safe_load((run / LABEL_DIR / "pseudo_labels.yaml").read_text())
    assert card == {
        "pseudo_labels": True,
        "teacher": str(teacher.resolve()),
        "rules": asdict(rules),
        "sets": {"seg": {"tagging": "seg/labels.json"}, "tag": {"semantic": "tag/masks/semantic"}},
    }
    pngs = sorted((run / LABEL_DIR / "tag" / "masks" / "semantic").rglob("*.png"))
    assert len(pngs) == 8
    maps = np.stack([cv2.imread(str(p), cv2.IMREAD_UNCHANGED) for p in pngs])
    assert (maps == 255).any() and (maps != 255).any()  # the 0.35 rule kept part of the pixels

    # the student's plan adds them as labels: the tag set now also carries semantic
    units = plan_for_model(config, build_model(config.model), run_dir=run)
    student = units[2]
    assert isinstance(units[1], PseudoLabelPlan) and isinstance(student, StagePlan)
    tag = student.data.sets["tag"]
    assert tag.tasks == ["tagging", "semantic"]
    assert tag.pseudo_labels == {"semantic": run / LABEL_DIR / "tag" / "masks" / "semantic"}
    seg = student.data.sets["seg"]
    assert seg.pseudo_labels == {"tagging": run / LABEL_DIR / "seg" / "labels.json"}
    dataset = build_dataset(student.data.model_copy(update={"sets": {"tag": tag}}), "train")
    assert collate([dataset[0], dataset[1]]).is_labeled("semantic").all()


def test_a_pseudo_label_stage_plans_before_its_labels_exist() -> None:
    config = make_config(Path("nowhere"), STAGES)
    units = plan_for_model(config, build_model(config.model))
    labels = units[1]
    assert isinstance(labels, PseudoLabelPlan)
    assert (labels.teacher, labels.init, labels.batch_size) == ("stage:teacher", "stage:teacher", 3)
    assert labels.labels == {"seg": ["tagging"], "tag": ["semantic"]}
    assert labels.rules == {
        "box_score": 0.5,
        "semantic_confidence": 0.35,
        "drivable_confidence": 0.3,
        "joint_score": 0.2,
        "confidence": {},
    }
    # without a run directory, the student's label paths are relative to it
    assert units[2].data.sets["tag"].pseudo_labels == {
        "semantic": LABEL_DIR / "tag" / "masks" / "semantic"
    }


@pytest.mark.parametrize(
    ("stages", "error", "message"),
    [
        # sources naming a stage
        (
            [TEACHER, LABELS, {**STUDENT, "pseudo_labels": [{"stage": "teachr"}]}],
            ConfigError,
            r"stage 'student': pseudo-label source \{stage: teachr\}: 'teachr' names no earlier "
            r"stage of the recipe \(earlier: teacher, labels\)",
        ),
        (
            [{**TEACHER, "pseudo_labels": [{"stage": "labels"}]}, LABELS, STUDENT],
            ConfigError,
            r"stage 'teacher': pseudo-label source \{stage: labels\}: 'labels' names no earlier",
        ),
        (
            [TEACHER, LABELS, {**STUDENT, "pseudo_labels": [{"stage": "teacher"}]}],
            RecipeError,
            r"recipe stage 'student': pseudo-label source \{stage: teacher\}: stage 'teacher' "
            r"\(kind supervised\) writes no pseudo labels; earlier stages that write pseudo "
            r"labels: labels",
        ),
        (
            [TEACHER, {**STUDENT, "pseudo_labels": [{"stage": "teacher"}]}],
            RecipeError,
            r"stage 'teacher' \(kind supervised\) writes no pseudo labels; no earlier stage "
            r"writes pseudo labels \(add a stage of kind pseudo_label\)",
        ),
        (
            [
                TEACHER,
                LABELS,
                {
                    **STUDENT,
                    "pseudo_labels": [{"stage": "labels", "sets": ["seg"], "tasks": ["semantic"]}],
                },
            ],
            RecipeError,
            r"pseudo-label source \{stage: labels\} has no 'semantic' labels for set 'seg' "
            r"\(it has \['tagging'\]\)",
        ),
        (
            [TEACHER, LABELS, {**STUDENT, "pseudo_labels": [{"stage": "labels", "path": "x"}]}],
            ConfigError,
            r"exactly one of `path` or `stage`",
        ),
        # the pseudo_label stage itself
        (
            [TEACHER, {**LABELS, "steps": 2}],
            ConfigError,
            r"stage 'labels': a pseudo_label stage trains nothing, so `steps` would have no effect",
        ),
        (
            [TEACHER, {**LABELS, "optimizer": {"lr": 0.1}, "sampler": "uniform"}],
            ConfigError,
            r"so `sampler`, `optimizer` would have no effect; drop them",
        ),
        (
            [TEACHER, {**LABELS, "tasks": None}],
            RecipeError,
            r"recipe stage 'labels': name the tasks to pseudo-label \(`tasks: \[...\]`",
        ),
        (
            [TEACHER, {**LABELS, "tasks": ["semantic"], "sets": ["seg", "tag"]}],
            RecipeError,
            r"set 'seg' has labels of its own for every task of \['semantic'\]: nothing to "
            r"pseudo-label",
        ),
        (
            [LABELS],
            RecipeError,
            r"teacher 'previous': this is the first stage, so no stage trained a teacher",
        ),
        (
            [TEACHER, {**LABELS, "kind": {"type": "pseudo_label", "teacher": "stage:labels"}}],
            RecipeError,
            r"teacher 'stage:labels' names no earlier stage \(earlier: teacher\)",
        ),
        (
            [TEACHER, {**LABELS, "kind": {"type": "pseudo_label", "box_score": 2}}],
            ConfigError,
            r"recipe\.stages\.1\.kind\.box_score",
        ),
    ],
)
def test_bad_sources_and_stages_are_errors_before_anything_trains(
    tiny_data: Path, tmp_path: Path, stages: list[dict[str, Any]], error: type, message: str
) -> None:
    with pytest.raises(error, match=message):
        run_recipe(make_config(tiny_data, stages), tmp_path / "never", progress=False)
    assert not (tmp_path / "never").exists()
