"""Pseudo labels of mask tasks: each task's own pixel-confidence threshold, end to end through the
`drivemtl pseudo-label` command with a stub teacher whose maps and confidences are known."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import typer
import yaml
from engine_fixtures import H, W, make_config
from torch import nn
from typer.testing import CliRunner

from drivemtl.cli.train import pseudo_label
from drivemtl.config import dump_config
from drivemtl.engine.checkpoint import save_weights
from drivemtl.engine.plan import RecipeError
from drivemtl.engine.pseudo_label import PseudoLabelRules, mask_label
from drivemtl.structures.batch import Batch
from drivemtl.structures.predictions import FramePrediction
from drivemtl.structures.sample import SampleMeta

# The stub teacher's maps on every 64 x 96 frame: class x // 32 (0, 1, 2 in three column bands),
# confidence ROW_CONFIDENCE[y // 16] (four row bands; binary fractions, so no rounding at the
# thresholds). Semantic: class 7 everywhere with the same confidences.
ROW_CONFIDENCE = (0.25, 0.375, 0.5, 0.75)
SEMANTIC_CLASS = 7


def _teacher_maps(size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    y, x = torch.meshgrid(torch.arange(size[0]), torch.arange(size[1]), indexing="ij")
    return x // 32, torch.tensor(ROW_CONFIDENCE)[y // 16]


class StubTeacher(nn.Module):
    """Stands in for the built model: fixed drivable / semantic maps with known confidences."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("weight", torch.zeros(1))  # what the checkpoint loads into
        self.tasks: dict[str, nn.Module] = {}  # no detector: class names fall back to the default
        self.support: dict[str, nn.Module] = {}

    def predict(self, batch: Batch, tasks: list[str]) -> list[FramePrediction]:
        """One prediction per frame, in original-image pixels like the real model's."""
        predictions = []
        for meta in batch.metas:
            assert meta.orig_size == (H, W)
            classes, confidence = _teacher_maps(meta.orig_size)
            predictions.append(
                FramePrediction(
                    meta=meta,
                    drivable=classes,
                    drivable_confidence=confidence,
                    semantic=torch.full_like(classes, SEMANTIC_CLASS),
                    semantic_confidence=confidence.clone(),
                )
            )
        return predictions


def _expected(first_kept_row: int, classes: tuple[int, int, int] = (0, 1, 2)) -> np.ndarray:
    """Hand-written label map: rows above `first_kept_row` ignore (255), below it the column
    bands' classes."""
    out = np.full((H, W), 255, dtype=np.uint8)
    out[first_kept_row:, :32] = classes[0]
    out[first_kept_row:, 32:64] = classes[1]
    out[first_kept_row:, 64:] = classes[2]
    return out


@pytest.fixture
def teacher_run(tiny_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """(config YAML with a drivable task, teacher checkpoint) with `build_model` stubbed."""
    import drivemtl.models

    config_path = tmp_path / "teacher.yaml"
    dump_config(make_config(tiny_data, [{"name": "teacher", "steps": 1}]), config_path)
    tree = yaml.safe_load(config_path.read_text())
    tree["model"]["tasks"]["drivable"] = tree["model"]["tasks"]["semantic"]
    config_path.write_text(yaml.safe_dump(tree))
    checkpoint = save_weights({"weight": torch.ones(1)}, tmp_path / "teacher.safetensors")
    monkeypatch.setattr(drivemtl.models, "build_model", lambda cfg: StubTeacher())
    return config_path, checkpoint


def _run(teacher_run, out: Path, tasks: list[str], options: list[str]) -> dict:
    config_path, checkpoint = teacher_run
    app = typer.Typer()
    app.command("pseudo-label")(pseudo_label)  # the only command: invoked without its name
    args = [str(config_path), "--checkpoint", str(checkpoint), "--sets", "seg"]
    for task in tasks:
        args += ["--tasks", task]
    result = CliRunner().invoke(app, [*args, "--out", str(out), *options])
    assert result.exit_code == 0, result.output
    return yaml.safe_load((out / "pseudo_labels.yaml").read_text())


def _pngs(folder: Path) -> list[np.ndarray]:
    paths = sorted(folder.rglob("*.png"))
    assert [p.relative_to(folder).as_posix() for p in paths] == [
        f"img/seg{i:03d}.png" for i in range(8)
    ]
    return [cv2.imread(str(p), cv2.IMREAD_UNCHANGED) for p in paths]


def test_drivable_pixels_below_the_default_threshold_become_ignore(teacher_run, tmp_path):
    card = _run(teacher_run, tmp_path / "pseudo", ["drivable"], [])
    assert card["rules"]["drivable_confidence"] == 0.3
    assert card["sets"] == {"seg": {"drivable": "seg/masks/drivable"}}
    # 0.25 < 0.3: the first row band is ignore; 0.375, 0.5, 0.75 keep the teacher's classes
    for png in _pngs(tmp_path / "pseudo" / "seg" / "masks" / "drivable"):
        assert png.dtype == np.uint8 and np.array_equal(png, _expected(16))


def test_drivable_and_semantic_thresholds_are_separate_options(teacher_run, tmp_path):
    options = ["--drivable-confidence", "0.5", "--semantic-confidence", "0.6"]
    card = _run(teacher_run, tmp_path / "pseudo", ["drivable", "semantic"], options)
    rules = card["rules"]
    assert (rules["drivable_confidence"], rules["semantic_confidence"]) == (0.5, 0.6)
    masks = tmp_path / "pseudo" / "seg" / "masks"
    # drivable at 0.5: 0.25 and 0.375 ignore, 0.5 (equal: kept) and 0.75 keep their classes
    for png in _pngs(masks / "drivable"):
        assert np.array_equal(png, _expected(32))
    # semantic at 0.6: only the 0.75 band keeps class 7 (with 0.5 it would keep two bands)
    for png in _pngs(masks / "semantic"):
        assert np.array_equal(png, _expected(48, (SEMANTIC_CLASS,) * 3))


def test_a_drivable_prediction_without_confidence_is_an_error_unless_unfiltered():
    meta = SampleMeta(name="a.jpg", image_set="s", orig_size=(1, 3))
    pred = FramePrediction(meta=meta, drivable=torch.tensor([[0, 1, 2]]))
    with pytest.raises(RecipeError, match=r"a\.jpg: the drivable prediction carries no confidence"):
        mask_label(pred, "drivable", PseudoLabelRules())
    unfiltered = mask_label(pred, "drivable", PseudoLabelRules(drivable_confidence=0.0))
    assert unfiltered.tolist() == [[0, 1, 2]]
    pred.drivable_confidence = torch.tensor([[0.9, 0.1, 0.35]])
    assert mask_label(pred, "drivable", PseudoLabelRules()).tolist() == [[0, 255, 2]]


def test_a_frame_skipped_for_bad_input_gets_no_label_and_no_neighbour_twice(
    tiny_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil

    import drivemtl.models
    from drivemtl.engine.pseudo_label import write_pseudo_labels

    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    (data / "seg" / "images" / "img" / "seg003.jpg").write_bytes(b"not a jpeg")
    config = make_config(data, [{"name": "teacher", "steps": 1}])
    config.data.on_error = "skip"
    checkpoint = save_weights({"weight": torch.ones(1)}, tmp_path / "teacher.safetensors")
    monkeypatch.setattr(drivemtl.models, "build_model", lambda cfg: StubTeacher())
    write_pseudo_labels(
        config, checkpoint, ["seg", "tag"], ["semantic", "tagging"], tmp_path / "pl"
    )
    names = sorted(p.stem for p in (tmp_path / "pl" / "seg" / "masks" / "semantic").rglob("*.png"))
    assert names == [f"seg{i:03d}" for i in range(8) if i != 3]
    frames = yaml.safe_load((tmp_path / "pl" / "seg" / "labels.json").read_text())
    assert [f["name"] for f in frames] == [f"img/seg{i:03d}.jpg" for i in range(8) if i != 3]


def test_set_prediction_heads_pseudo_label_through_the_same_thresholds(
    tiny_data: Path, tmp_path: Path
) -> None:
    """A MaskFormer semantic head and a Sparse R-CNN detector as the teacher: pixels and boxes
    pass the thresholds only where the heads are confident."""
    from drivemtl.engine.pseudo_label import write_pseudo_labels
    from drivemtl.models import build_model

    model_cfg = {
        "backbone": {"type": "resnet18", "width": 8, "norm": "bn"},
        "neck": {"type": "fpn", "out_channels": 16, "norm": "gn"},
        "tasks": {
            "semantic": {"head": {"type": "maskformer", "num_queries": 4, "hidden_dim": 16,
                                  "nheads": 2, "dim_feedforward": 32, "dec_layers": 1,
                                  "mask_dim": 8, "conv_dim": 8}},
            "detection": {"head": {"type": "sparse_rcnn", "num_proposals": 6, "hidden_dim": 16,
                                   "num_stages": 1, "num_heads": 2, "ffn_dim": 32,
                                   "detections_per_image": 6}},
        },
    }  # fmt: skip
    config = make_config(tiny_data, [{"name": "teacher", "steps": 1}], model=model_cfg)
    torch.manual_seed(0)
    teacher = build_model(config.model).eval()
    # Untrained: MaskFormer's normalised scores are near 1/19 and Sparse R-CNN's near its 0.01
    # prior, so nothing passes 0.3 / 0.5.
    out = tmp_path / "cold"
    write_pseudo_labels(config, teacher, ["seg"], ["semantic", "detection"], out)
    assert all((m == 255).all() for m in _pngs(out / "seg" / "masks" / "semantic"))
    frames = yaml.safe_load((out / "seg" / "labels.json").read_text())
    assert all(not f.get("labels") for f in frames)
    # Confident heads: every query says "car" (class 13) / class 2 with logits far above the rest.
    with torch.no_grad():
        semantic = teacher.heads["semantic"]
        semantic.class_embed.weight.zero_()
        semantic.class_embed.bias.fill_(-10.0)
        semantic.class_embed.bias[13] = 10.0
        for stage in teacher.heads["detection"].stages:
            stage.class_logits.weight.zero_()
            stage.class_logits.bias.fill_(-10.0)
            stage.class_logits.bias[2] = 10.0
    out = tmp_path / "hot"
    write_pseudo_labels(config, teacher, ["seg"], ["semantic", "detection"], out)
    assert all((m == 13).all() for m in _pngs(out / "seg" / "masks" / "semantic"))
    frames = yaml.safe_load((out / "seg" / "labels.json").read_text())
    assert all(len(f["labels"]) == 6 for f in frames)
    assert {lab["category"] for f in frames for lab in f["labels"]} == {"car"}
