"""A brand-new dense task defined only in this file trains, evaluates, predicts and writes files.

`road` is binary road segmentation with its own data field: class-map PNGs under
`masks/road/<frame>.png` (0 other, 1 road, 255 ignore), predictions written to
`masks/road_pred/`. Nothing under `src/` knows it: the field declaration drives collate,
transforms, `Sample.check`, the BDD100K reader, the prediction writer, the `predict` panels and
pseudo-labelling, the task plug-in brings head, loss and predictions, and an evaluator registered
here scores it. The evaluator's IoU is checked against an IoU computed with numpy from the PNG
files `predict` wrote and the ground-truth PNGs.
"""

from __future__ import annotations

import random
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch import Tensor

from drivemtl.config.loader import ConfigError, validate_tree
from drivemtl.data import build_dataset
from drivemtl.data.transforms import flip_sample, resize_sample
from drivemtl.engine.pseudo_label import write_pseudo_labels
from drivemtl.engine.run_config import RunConfig
from drivemtl.engine.trainer import run_recipe
from drivemtl.evaluation.base import EVALUATORS, dense_pairs
from drivemtl.evaluation.model_eval import evaluate_model
from drivemtl.inference.run import run_predict
from drivemtl.inference.visualize import display_scale
from drivemtl.structures.batch import Batch, collate
from drivemtl.structures.fields import DataField, declare_task
from drivemtl.structures.predictions import FramePrediction
from drivemtl.structures.sample import Sample, SampleMeta
from drivemtl.tasks.base import TASKS, require_target, zero_loss
from drivemtl.tasks.dense import DenseTask
from drivemtl.tasks.losses import cross_entropy

H, W = 64, 96

# -- the new task: its data field, plug-in and evaluator ------------------------------------------
declare_task(
    "road",
    DataField(
        "road", codec="class_map", classes=2, path="masks/road",
        prediction_path="masks/road_pred", visual="classes", pseudo_labels=True,
    ),
)  # fmt: skip


@TASKS.register("road")
class RoadTask(DenseTask):
    """Road vs. everything else, per pixel (255 = ignore)."""

    name = "road"
    group = "segmentation"
    metric = "IoU"

    def branches(self) -> dict[str, int]:
        return {"logits": 2}

    def pixel_loss(self, outputs: dict[str, Tensor], batch: Batch) -> Tensor:
        selected, mask = self.select(outputs, batch)
        if not bool(mask.any()):
            return zero_loss(batch.images.device)
        target = require_target(batch, "road", self.name)[mask]
        return cross_entropy(selected["logits"], target)

    def predictions(self, outputs: dict[str, Tensor], batch: Batch) -> list[FramePrediction]:
        probs = outputs["logits"].detach().float().softmax(dim=1)
        predictions = self.new_predictions(batch)
        for pred, p in zip(predictions, self.to_original(probs, batch), strict=True):
            confidence, labels = p.max(dim=0)
            pred.road = labels
            pred.set("road_confidence", confidence)
        return predictions


@EVALUATORS.register("road")
class RoadIoU:
    """IoU of the road class over every labelled, non-ignored pixel."""

    task = "road"

    def __init__(self) -> None:
        self.intersection = self.union = 0

    def update(self, predictions: list[FramePrediction], batch: Batch) -> None:
        for _, pred, target in dense_pairs(predictions, batch, "road"):
            valid = target != 255
            p, t = pred.round().long()[valid] == 1, target[valid] == 1
            self.intersection += int((p & t).sum())
            self.union += int((p | t).sum())

    def compute(self) -> dict[str, float]:
        return {"IoU": 100.0 * self.intersection / self.union if self.union else float("nan")}


# -- data and config -----------------------------------------------------------------------------
def road_mask() -> np.ndarray:
    mask = np.zeros((H, W), np.uint8)
    mask[H // 2 :, 16:80] = 1  # a road in the lower middle
    mask[H // 2 - 2 : H // 2] = 255  # an unlabelled band at the horizon
    return mask


def write_roads(root: Path, frames: int = 8) -> Path:
    """Images whose road is dark grey on bright noise, and their `masks/road` PNGs."""
    rng = np.random.default_rng(0)
    for i in range(frames):
        image = rng.integers(150, 255, (H, W, 3), dtype=np.uint8)
        road = road_mask() == 1
        image[road] = rng.integers(40, 70, (int(road.sum()), 3), dtype=np.uint8)
        for folder, array in (("images", image), ("masks/road", road_mask())):
            path = root / folder / f"f{i}.{'jpg' if folder == 'images' else 'png'}"
            path.parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(path), array)
    return root


def road_config(root: Path, steps: int = 30, tasks: tuple[str, ...] = ("road",)) -> RunConfig:
    tree = {
        "name": "roads",
        "seed": 5,
        "model": {
            "backbone": {"type": "resnet18", "width": 8, "norm": "bn"},
            "neck": {"type": "fpn", "out_channels": 16, "norm": "gn"},
            "tasks": {"road": {"head": {"channels": 16}}},
        },
        "data": {
            "sets": {"roads": {"root": str(root), "tasks": list(tasks)}},
            "transforms": {"heights": [H], "flip": 0.5},
        },
        "recipe": {
            "stages": [{"name": "road", "steps": steps, "batch_size": 4, "optimizer": {"lr": 1e-2}}]
        },
        "train": {"accelerator": "cpu"},
    }
    return validate_tree(tree, {}, RunConfig, "<test>")


# -- the declaration drives the core -------------------------------------------------------------
def test_the_field_is_read_collated_checked_and_transformed_by_its_declaration(tmp_path):
    root = write_roads(tmp_path / "roads", frames=2)
    dataset = build_dataset(road_config(root).data, "train", transform=lambda s: s)
    sample = dataset[0]
    assert sample.tasks == {"road"}
    assert sample.road.dtype == torch.int64
    assert torch.equal(sample.road, torch.from_numpy(road_mask()).long())

    small = Sample(torch.zeros(3, 2, 3), SampleMeta("s", "x", (2, 3)), frozenset({"road"}))
    small.road = torch.tensor([[0, 1, 1], [255, 0, 1]])
    batch = collate([sample, small], size_divisor=32)
    assert batch.road.shape == (2, 64, 96) and batch.road.dtype == torch.uint8
    assert torch.equal(batch.road[1, :2, :3], small.road.to(torch.uint8))
    assert (batch.road[1, 2:] == 255).all() and (batch.road[1, :, 3:] == 255).all()  # padding
    assert batch.to("cpu").road is not None

    flip_sample(small)
    assert small.road.tolist() == [[1, 1, 0], [1, 0, 255]]
    resize_sample(small, (4, 6))  # nearest: every id doubles
    assert small.road[::2, ::2].tolist() == [[1, 1, 0], [1, 0, 255]]
    small.road = torch.zeros(3, 3, dtype=torch.int64)
    with pytest.raises(ValueError, match=r"frame s: road is \(3, 3\), image is \(4, 6\)"):
        small.check()


def test_an_undeclared_task_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown task\(s\) \['rivers'\]; known: .*road"):
        road_config(tmp_path, tasks=("rivers",))


@pytest.mark.slow
def test_the_new_task_trains_evaluates_predicts_and_writes_files(tmp_path):
    root = write_roads(tmp_path / "roads")
    config = road_config(root)
    random.seed(0)
    run = run_recipe(config, tmp_path / "run", progress=False)

    result = evaluate_model(config, run.final_weights, out_dir=tmp_path / "eval", progress=False)
    iou = result.metrics["road"]["IoU"]
    assert result.frames == {"roads": 8}
    assert iou > 90.0, iou  # dark road on bright noise: 99.8 after 30 steps

    out = tmp_path / "predict"
    predicted = run_predict(config, run.final_weights, root / "images", out, panels=True,
                            progress=False)  # fmt: skip
    assert predicted.frames == 8
    inter = union = 0
    for i in range(8):
        pred = cv2.imread(str(out / "masks" / "road_pred" / f"f{i}.png"), cv2.IMREAD_UNCHANGED)
        truth = road_mask()
        valid = truth != 255
        inter += int(((pred == 1) & (truth == 1) & valid).sum())
        union += int((((pred == 1) | (truth == 1)) & valid).sum())
    assert iou == pytest.approx(100.0 * inter / union, abs=1e-9)
    panels = sorted((out / "panels" / "road").glob("*.png"))
    assert len(panels) == 8
    panel = cv2.imread(str(panels[0]))[..., ::-1]
    road = cv2.imread(str(out / "masks" / "road_pred" / panels[0].name), cv2.IMREAD_UNCHANGED)
    scale = display_scale(road.shape[1])  # panels are drawn upscaled, pixel blocks
    assert panel.shape[:2] == (road.shape[0] * scale, road.shape[1] * scale)
    panel = panel[::scale, ::scale]
    assert (panel[road == 0] == 0).all() and (panel[road == 1].sum(axis=-1) > 0).all()

    card = write_pseudo_labels(config, run.final_weights, ["roads"], ["road"], tmp_path / "pl")
    labels = sorted((tmp_path / "pl" / "roads" / "masks" / "road").glob("*.png"))
    assert len(labels) == 8 and card.is_file()
    first = cv2.imread(str(labels[0]), cv2.IMREAD_UNCHANGED)
    written = cv2.imread(str(out / "masks" / "road_pred" / labels[0].name), cv2.IMREAD_UNCHANGED)
    assert np.array_equal(first, written)  # confidence rule 0: the teacher's map as predicted
    student = config.data.model_copy(deep=True)
    student.sets["roads"].pseudo_labels = {"road": tmp_path / "pl" / "roads" / "masks" / "road"}
    read_back = build_dataset(student, "train", transform=lambda s: s)[0]
    assert np.array_equal(read_back.road.numpy(), first.astype(np.int64))
