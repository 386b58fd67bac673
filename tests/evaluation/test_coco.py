"""COCO AP conventions on hand-made frames and the model-side path."""

from __future__ import annotations

import math

import pytest
import torch

from drivemtl.evaluation.base import EvaluationInputError
from drivemtl.evaluation.coco import (
    CocoEvaluator,
    DetectionEvaluator,
    PoseEvaluator,
    box2d_to_coco,
)
from drivemtl.structures.batch import Batch
from drivemtl.structures.instances import Instances
from drivemtl.structures.predictions import FramePrediction
from drivemtl.structures.sample import SampleMeta
from drivemtl.structures.scalabel import Frame


def _frame(name: str, boxes: list[tuple[str, float, float | None]], crowd: bool = False) -> Frame:
    return Frame.model_validate({"name": name, "labels": [
        {"id": str(k), "category": cat, "score": score, "attributes": {"crowd": crowd},
         "box2d": {"x1": x, "y1": 10, "x2": x + 49, "y2": 59}}
        for k, (cat, x, score) in enumerate(boxes)]})  # fmt: skip


def test_box_width_is_inclusive() -> None:
    assert box2d_to_coco(10, 20, 19, 29) == [10, 20, 10, 10]


def test_perfect_missing_and_crowd() -> None:
    ev = CocoEvaluator("bbox", ["car", "bus"])
    ev.update_frames([_frame("a", [("car", 0, None)]), _frame("b", [("car", 100, None)])],
                     [_frame("a", [("car", 0, 0.9)])])  # fmt: skip
    m = ev.compute()
    assert m["AP50"] == pytest.approx(50.0, abs=0.6)  # one of two cars found (101-pt interp.)
    assert math.isnan(m["AP/bus"])
    crowd = CocoEvaluator("bbox", ["car"])
    crowd.update_frames(
        [_frame("a", [("car", 0, None)], crowd=True)], [_frame("a", [("car", 0, 0.9)])]
    )
    assert math.isnan(crowd.compute()["AP"])  # only a crowd box: nothing to find, no FP either


def test_errors() -> None:
    gt = [_frame("a", [("car", 0, None)])]
    with pytest.raises(EvaluationInputError, match="unknown category"):
        CocoEvaluator("bbox", ["car"]).update_frames(gt, [_frame("a", [("ufo", 0, 0.5)])])
    with pytest.raises(EvaluationInputError, match="no score"):
        CocoEvaluator("bbox", ["car"]).update_frames(gt, [_frame("a", [("car", 0, None)])])
    lenient = CocoEvaluator("bbox", ["car"], strict=False)
    lenient.update_frames(gt, [_frame("a", [("ufo", 0, 0.5)]), _frame("zz", [])])
    assert sum(lenient.skipped.values()) == 2
    assert lenient.compute()["AP"] == 0.0


def test_model_side_update_and_merge() -> None:
    meta = SampleMeta(name="f0", image_set="s", orig_size=(64, 128))
    boxes = torch.tensor([[0.0, 10.0, 49.0, 59.0]])
    target = Instances(boxes=boxes, classes=torch.tensor([2]))
    batch = Batch(images=torch.zeros(1, 3, 64, 128), image_sizes=[(64, 128)], metas=[meta],
                  labeled={"detection": torch.tensor([True])}, instances=[target],
                  lane_lines=[None])  # fmt: skip
    pred = FramePrediction(meta=meta, detections=Instances(boxes=boxes, classes=torch.tensor([2]),
                                                           scores=torch.tensor([0.8])))  # fmt: skip
    a = DetectionEvaluator()
    a.update([pred], batch)
    assert a.compute()["AP/car"] == pytest.approx(100.0)
    b = DetectionEvaluator()
    with pytest.raises(EvaluationInputError, match="twice"):
        a.merge(a)
    b.merge(a)
    assert b.compute()["AP"] == pytest.approx(100.0)


def test_model_side_pose_of_a_rider_is_a_person_pose() -> None:
    """Poses are one category whatever the detector class: a rider's exact pose scores AP 100."""
    meta = SampleMeta(name="f0", image_set="s", orig_size=(64, 128))
    boxes = torch.tensor([[10.0, 4.0, 30.0, 60.0]])
    keypoints = torch.zeros(1, 18, 3)
    keypoints[0, :, 0] = torch.linspace(12, 28, 18)
    keypoints[0, :, 1] = torch.linspace(6, 58, 18)
    keypoints[0, :, 2] = 2.0
    rider = torch.tensor([1])
    target = Instances(boxes=boxes, classes=rider, keypoints=keypoints)
    batch = Batch(images=torch.zeros(1, 3, 64, 128), image_sizes=[(64, 128)], metas=[meta],
                  labeled={"pose": torch.tensor([True])}, instances=[target],
                  lane_lines=[None])  # fmt: skip
    pose = Instances(boxes=boxes, classes=rider, scores=torch.tensor([0.9]), keypoints=keypoints)
    ev = PoseEvaluator()
    ev.update([FramePrediction(meta=meta, poses=pose)], batch)
    assert ev.compute()["AP"] == pytest.approx(100.0)
