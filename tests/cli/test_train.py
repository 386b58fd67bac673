"""`drivemtl train` / `pseudo-label` commands end to end on a tiny dataset, and their errors."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import typer
import yaml
from typer.testing import CliRunner

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "engine"))
from engine_fixtures import make_config, write_tiny_data

from drivemtl.cli.errors import UsageError
from drivemtl.cli.train import pseudo_label, train
from drivemtl.config import dump_config
from drivemtl.data import build_dataset, build_transforms
from drivemtl.engine.checkpoint import load_into, load_weights
from drivemtl.models import build_model
from drivemtl.structures.batch import collate

app = typer.Typer()
app.command("train")(train)
app.command("pseudo-label")(pseudo_label)


@pytest.mark.slow
def test_train_pseudo_label_then_train_on_them(tmp_path: Path) -> None:
    data = write_tiny_data(tmp_path / "data")
    stage = {"name": "teacher", "steps": 2, "sampler": "set_round_robin", "optimizer": {"lr": 1e-2}}
    cfg_path = tmp_path / "run.yaml"
    dump_config(make_config(data, [stage]), cfg_path)
    runner = CliRunner()
    result = runner.invoke(
        app,
        [
            "train",
            str(cfg_path),
            "--out",
            str(tmp_path / "run"),
            "--no-progress",
            "--eval-split",
            "val",
        ],
    )
    assert result.exit_code == 0, result.output
    teacher = tmp_path / "run" / "final.safetensors"
    assert teacher.is_file()
    # --eval-split scores the final weights into RUN/eval with every task's headline keys
    metrics = json.loads((tmp_path / "run" / "eval" / "metrics.json").read_text())
    flat = json.dumps(metrics)
    for key in ("tagging", "semantic", "acc", "mIoU"):
        assert key in flat

    labels = tmp_path / "pseudo"
    args = ["pseudo-label", str(cfg_path), "--checkpoint", str(teacher), "--sets", "tag"]
    args += ["--tasks", "semantic", "--out", str(labels), "--semantic-confidence", "0.06"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    card = yaml.safe_load((labels / "pseudo_labels.yaml").read_text())
    assert card["sets"] == {"tag": {"semantic": "tag/masks/semantic"}}

    # the PNG equals the teacher's prediction with low-confidence pixels set to 255
    config = make_config(data, [stage])
    model = build_model(config.model)
    load_into(model, load_weights(teacher))
    model.eval()
    one = config.data.model_copy(update={"sets": {"tag": config.data.sets["tag"]}})
    sample = build_dataset(one, "train", transform=build_transforms(one.transforms, False))[0]
    pred = model.predict(collate([sample]), ["semantic"])[0]
    expected = pred.semantic.clone()
    expected[pred.semantic_confidence < 0.06] = 255
    png = cv2.imread(str(labels / "tag/masks/semantic/img/tag000.png"), cv2.IMREAD_UNCHANGED)
    assert np.array_equal(png, expected.numpy().astype(np.uint8))

    # a student stage adds them as a label source: the tag set now also trains semantic
    student = {
        "name": "student",
        "steps": 1,
        "sets": ["tag"],
        "tasks": ["semantic", "tagging"],
        "pseudo_labels": [{"path": str(labels)}],
    }
    student_cfg = tmp_path / "student.yaml"
    dump_config(make_config(data, [student]), student_cfg)
    result = runner.invoke(
        app, ["train", str(student_cfg), "--out", str(tmp_path / "student"), "--no-progress"]
    )
    assert result.exit_code == 0, result.output
    assert (tmp_path / "student" / "final.safetensors").is_file()


def test_usage_errors(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="--precision"):
        train(tmp_path / "x.yaml", precision="fp8")
    data = write_tiny_data(tmp_path / "data")
    cfg = tmp_path / "run.yaml"
    dump_config(make_config(data, [{"name": "a", "steps": 1}]), cfg)
    with pytest.raises(UsageError, match="--resume needs --out"):
        train(cfg, resume=True)
