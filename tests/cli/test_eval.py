"""`drivemtl eval` end to end on a tiny synthetic dataset with untrained weights: metrics.json
equals the evaluators run directly on the model's predictions, and a wrong checkpoint is one line."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch
import typer
import yaml
from typer.testing import CliRunner

from drivemtl.cli.errors import UsageError
from drivemtl.cli.eval import eval_model
from drivemtl.data import DataError, build_dataset
from drivemtl.data.synthetic import generate_dataset
from drivemtl.engine.checkpoint import load_into, load_weights, save_weights
from drivemtl.engine.run_config import load_run_config
from drivemtl.evaluation.coco import DetectionEvaluator, InstanceSegEvaluator, PoseEvaluator
from drivemtl.evaluation.lanes import LaneEvaluator
from drivemtl.evaluation.segmentation import DrivableEvaluator, SemanticEvaluator
from drivemtl.evaluation.tagging import TaggingEvaluator
from drivemtl.models import build_model
from drivemtl.structures.batch import collate
from drivemtl.structures.bdd import THING_CLASSES

app = typer.Typer()
app.command("eval")(eval_model)


@app.command("noop")
def _noop() -> None:
    """Second command so typer keeps sub-command names."""


TASKS = {
    "tagging": {},
    "semantic": {"head": {"channels": 16}},
    "drivable": {"head": {"channels": 16}},
    "lanes": {"head": {"channels": 16}},
    "detection": {"head": {"rpn": {"pre_nms_topk_test": 50, "post_nms_topk_test": 20},
                           "roi": {"fc_dim": 32, "detections_per_image": 10}}},
    "instance": {"head": {"channels": 16, "num_convs": 1}},
    "pose": {"head": {"channels": 16, "num_convs": 1}},
}  # fmt: skip


def _config(root: Path, width: int = 8) -> dict:
    return {
        "name": "tiny-eval",
        "model": {
            "backbone": {"type": "resnet18", "width": width, "norm": "bn"},
            "neck": {"type": "fpn", "out_channels": 16, "norm": "gn"},
            "tasks": TASKS,
        },
        "data": {
            "sets": {
                "detection": {
                    "root": str(root / "detection"),
                    "tasks": ["tagging", "detection", "pose", "drivable", "lanes"],
                },
                "segmentation": {
                    "root": str(root / "segmentation"),
                    "tasks": ["semantic", "instance"],
                    "categories": "ins_seg",
                },
            },
            "transforms": {"heights": [64]},
        },
    }


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A synthetic dataset (bdd-sets, 128x64), its config and untrained weights."""
    tmp = tmp_path_factory.mktemp("eval")
    generate_dataset(tmp / "ds", "bdd-sets", num_frames=8, size=(128, 64), seed=3, progress=False)
    (tmp / "run.yaml").write_text(yaml.safe_dump(_config(tmp / "ds")))
    torch.manual_seed(0)
    save_weights(build_model(load_run_config(tmp / "run.yaml").model), tmp / "w.safetensors")
    return tmp


def _direct_metrics(run: Path) -> dict[str, dict[str, float]]:
    """Independent path: predict set by set and feed the evaluators by hand."""
    cfg = load_run_config(run / "run.yaml")
    model = build_model(cfg.model)
    load_into(model, load_weights(run / "w.safetensors"))
    model.eval()
    evaluators = {
        "tagging": TaggingEvaluator(), "semantic": SemanticEvaluator(),
        "drivable": DrivableEvaluator(), "lanes": LaneEvaluator(),
        "detection": DetectionEvaluator(THING_CLASSES), "instance": InstanceSegEvaluator(),
        "pose": PoseEvaluator(),
    }  # fmt: skip
    dataset = build_dataset(cfg.data, "val")
    for name in dataset.sets:
        tasks = [t for t in evaluators if t in dataset.set_tasks(name)]
        frames = list(dataset.set_range(name))
        for start in range(0, len(frames), 3):  # the CLI's --batch-size 3 (see `_same`)
            batch = collate([dataset[i] for i in frames[start : start + 3]], cfg.data.size_divisor)
            predictions = model.predict(batch, tasks)
            for task in tasks:
                evaluators[task].update(predictions, batch)
    return {t: e.compute() for t, e in evaluators.items()}


def _same(a: float | None, b: float) -> bool:
    """Equal up to float noise. The direct path batches as the CLI does: with another batching
    float rounding differs (the conv kernels block differently), so a pixel whose class logits
    nearly tie (an untrained net has such pixels) may flip and move a per-class score."""
    if a is None:
        return math.isnan(b)
    return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-6)


@pytest.fixture(scope="module")
def evaluated(run: Path) -> tuple[str, Path]:
    """`drivemtl eval --out run/out` once for the module: its console output and folder."""
    out = run / "out"
    result = CliRunner().invoke(
        app, ["eval", str(run / "run.yaml"), "--checkpoint", str(run / "w.safetensors"),
              "--out", str(out), "--batch-size", "3", "--no-progress"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    return result.output, out


def test_eval_writes_metrics_equal_to_direct_evaluation(
    run: Path, evaluated: tuple[str, Path]
) -> None:
    output, out = evaluated
    assert "### semantic" in output and "mIoU" in output
    assert "heads.detection" in output  # the resource table
    metrics = json.loads((out / "metrics.json").read_text())
    expected = _direct_metrics(run)
    for task, values in expected.items():
        for key, value in values.items():
            assert f"{task}/{key}" in metrics, f"{task}/{key} missing"
            assert _same(metrics[f"{task}/{key}"], value), (
                task,
                key,
                metrics[f"{task}/{key}"],
                value,
            )
    # a non-degenerate check: drivable / tagging numbers of an untrained net are not all zero
    assert metrics["drivable/pAcc"] > 0 and metrics["tagging/acc"] is not None
    assert metrics["resources/params_M"] > 0 and metrics["resources/GMACs/heads.lanes"] > 0
    assert "VTDA" in (out / "metrics.md").read_text()


def test_eval_selected_set_only(run: Path) -> None:
    result = CliRunner().invoke(
        app, ["eval", str(run / "run.yaml"), "--checkpoint", str(run / "w.safetensors"),
              "--sets", "segmentation", "--out", str(run / "seg"), "--no-progress"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    metrics = json.loads((run / "seg" / "metrics.json").read_text())
    assert {k.split("/")[0] for k in metrics} == {"semantic", "instance", "vtda", "resources"}


def test_mismatched_checkpoint_is_one_line_naming_the_file(run: Path) -> None:
    other = run / "other.safetensors"
    cfg = load_run_config(run / "run.yaml", overrides=["model.backbone.width=16"])
    save_weights(build_model(cfg.model), other)
    result = CliRunner().invoke(
        app, ["eval", str(run / "run.yaml"), "--checkpoint", str(other), "--no-progress"]
    )
    assert isinstance(result.exception, UsageError)
    message = str(result.exception)
    assert str(other) in message and "\n" not in message and "shape" in message
    result = CliRunner().invoke(
        app, ["eval", str(run / "run.yaml"), "--checkpoint", str(run / "none.safetensors")]
    )
    assert isinstance(result.exception, UsageError) and "none.safetensors" in str(result.exception)
    result = CliRunner().invoke(
        app, ["eval", str(run / "run.yaml"), "--checkpoint", str(run / "w.safetensors"),
              "--sets", "nope"],
    )  # fmt: skip
    assert isinstance(result.exception, UsageError) and "known: detection" in str(result.exception)


def test_eval_reports_skipped_frames_and_refuses_an_empty_label_file(
    run: Path, tmp_path: Path
) -> None:
    root = Path(shutil.copytree(run / "ds" / "detection", tmp_path / "detection"))
    bad = sorted((root / "images").rglob("*.jpg"))[1]
    bad.write_bytes(b"not a JPEG")
    args = ["eval", str(run / "run.yaml"), "--checkpoint", str(run / "w.safetensors"),
            "--no-progress", "--set", f"data.sets.detection.root={root}"]  # fmt: skip
    result = CliRunner().invoke(app, [*args, "--set", "data.on_error=skip"])
    assert result.exit_code == 0, result.output
    assert "frames: detection 3 (1 skipped), segmentation 2" in result.output
    (root / "labels.json").write_text("[]")
    result = CliRunner().invoke(app, args)
    assert isinstance(result.exception, DataError)
    assert str(result.exception) == f"{root / 'labels.json'}: no frames in the label JSON"


def test_eval_reports_delta_t_against_single_task_runs(
    run: Path, evaluated: tuple[str, Path], tmp_path: Path
) -> None:
    base = ["eval", str(run / "run.yaml"), "--checkpoint", str(run / "w.safetensors"),
            "--no-progress", "--batch-size", "3"]  # fmt: skip
    plain = json.loads((evaluated[1] / "metrics.json").read_text())
    acc, pacc = plain["tagging/acc"], plain["drivable/pAcc"]
    assert acc > 0 and pacc > 0
    # single-task runs 25 % better on tagging and 20 % worse on drivable pAcc:
    # gains (acc - acc / 0.8) / (acc / 0.8) = -20 % and +25 % -> Delta_T = +2.5 %
    for name, data in (("tag", {"tagging/acc": acc / 0.8, "tagging/IoU": None}),
                       ("drv", {"drivable/pAcc": pacc / 1.25})):  # fmt: skip
        (tmp_path / "single" / name).mkdir(parents=True)
        (tmp_path / "single" / name / "metrics.json").write_text(json.dumps(data))
    args = [*base, "--out", str(tmp_path / "mtl"), "--baseline", str(tmp_path / "single"),
            "--metric", "tagging/acc", "--metric", "drivable/pAcc"]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "Δ_T +2.50 % over tagging/acc, drivable/pAcc" in result.output
    metrics = json.loads((tmp_path / "mtl/metrics.json").read_text())
    assert metrics["delta/Delta_T"] == pytest.approx(2.5)
    assert metrics["delta/gain/tagging/acc"] == pytest.approx(-20.0)
    assert metrics["delta/gain/drivable/pAcc"] == pytest.approx(25.0)
    assert {k: v for k, v in metrics.items() if not k.startswith("delta/")} == plain
    result = CliRunner().invoke(app, [*args, "--metric", "semantic/nope"])
    assert isinstance(result.exception, UsageError) and "semantic/nope" in str(result.exception)
