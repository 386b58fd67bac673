"""CLEAR / Identity rules on hand-computed sequences."""

from __future__ import annotations

import math

import numpy as np
import pytest

from drivemtl.evaluation.base import EvaluationInputError
from drivemtl.evaluation.tracking import BoxTrackEvaluator, ClearAccumulator, box_iou_distance
from drivemtl.structures.scalabel import Frame


def _frame(i: int, labels: list[tuple[str, str, float, bool]]) -> Frame:
    return Frame.model_validate({
        "name": f"v-{i}.jpg", "videoName": "v", "frameIndex": i,
        "labels": [{"id": tid, "category": cat, "score": 1.0, "attributes": {"crowd": crowd},
                    "box2d": {"x1": x, "y1": 0, "x2": x + 9, "y2": 9}}
                   for tid, cat, x, crowd in labels],
    })  # fmt: skip


def test_iou_distance_threshold() -> None:
    a = np.array([[0, 0, 10, 10]], np.float32)
    b = np.array([[0, 0, 10, 10], [5, 0, 10, 10], [0, 0, 10, 5]], np.float32)
    d = box_iou_distance(a, b, 0.5)
    assert d[0, 0] == 0.0
    assert math.isnan(d[0, 1])  # IoU 1/3
    assert d[0, 2] == pytest.approx(0.5)  # IoU exactly 0.5 is a match


def test_switch_miss_fp_and_mota() -> None:
    acc = ClearAccumulator()
    near = np.array([[0.1]])
    acc.update(np.array([1]), np.array([7]), near)  # match 1-7
    acc.update(np.array([1]), np.array([8]), near)  # switch to 8
    acc.update(np.array([1]), np.array([], int), np.zeros((1, 0)))  # miss
    acc.update(np.array([1]), np.array([8]), near)  # match 1-8 again (no switch)
    acc.update(np.array([], int), np.array([9]), np.zeros((0, 1)))  # false positive
    counts = acc.finish()
    assert (counts.matches, counts.switches, counts.misses, counts.false_positives) == (2, 1, 1, 1)
    metrics = counts.metrics()
    assert metrics["MOTA"] == pytest.approx((1 - (1 + 1 + 1) / 4) * 100)
    assert metrics["MOTP"] == pytest.approx(90.0)
    # identity: best pairing 1-8 shares 2 frames; 4 object + 4 hypothesis occurrences
    assert metrics["IDF1"] == pytest.approx(2 * 2 / 8 * 100)
    assert (metrics["MT"], metrics["FM"]) == (0, 1)  # tracked 3/4 -> partially; one gap
    assert metrics["PT"] == 1


def test_previous_pairing_kept_over_better_iou() -> None:
    acc = ClearAccumulator()
    acc.update(np.array([1, 2]), np.array([7, 8]), np.array([[0.1, np.nan], [np.nan, 0.1]]))
    # object 1 is now closer to 8, but 1-7 is still valid: kept, so no switch
    acc.update(np.array([1, 2]), np.array([7, 8]), np.array([[0.4, 0.0], [np.nan, 0.1]]))
    assert acc.finish().switches == 0


def test_crowd_region_removes_unmatched_prediction_and_overall_nan() -> None:
    gt = [_frame(0, [("a", "car", 0, False), ("c", "car", 100, True)])]
    pred = [_frame(0, [("1", "car", 0, False), ("2", "car", 100, False), ("3", "car", 200, False)])]
    ev = BoxTrackEvaluator()
    ev.update_frames(gt, pred)
    m = ev.compute()
    assert (m["FP"], m["FN"], m["IDSw"]) == (1, 0, 0)  # prediction 2 sits on the crowd box
    assert m["MOTA"] == pytest.approx(0.0)
    assert math.isnan(m["MOTA/bus"])  # no ground truth, no prediction
    assert m["mMOTA"] == pytest.approx(0.0 / 8)


def test_unknown_category_and_bad_ids() -> None:
    gt = [_frame(0, [("a", "car", 0, False)])]
    with pytest.raises(EvaluationInputError, match="unknown category"):
        BoxTrackEvaluator().update_frames(gt, [_frame(0, [("1", "spaceship", 0, False)])])
    lenient = BoxTrackEvaluator(strict=False)
    lenient.update_frames(gt, [_frame(0, [("1", "spaceship", 0, False)])])
    assert lenient.skipped["unknown category 'spaceship'"] == 1
    with pytest.raises(EvaluationInputError, match="not an integer"):
        BoxTrackEvaluator().update_frames(gt, [_frame(0, [("x1", "car", 0, False)])])


def test_merge_equals_single_pass() -> None:
    v1 = [_frame(0, [("a", "car", 0, False)])]
    v2 = [f.model_copy(update={"videoName": "w", "name": "w-0.jpg"}) for f in v1]
    p1 = [_frame(0, [("1", "car", 2, False)])]
    p2 = [f.model_copy(update={"videoName": "w", "name": "w-0.jpg"}) for f in p1]
    both = BoxTrackEvaluator()
    both.update_frames(v1 + v2, p1 + p2)
    a, b = BoxTrackEvaluator(), BoxTrackEvaluator()
    a.update_frames(v1, p1)
    b.update_frames(v2, p2)
    a.merge(b)
    assert a.compute()["MOTA"] == both.compute()["MOTA"] == 100.0


def _mot_batch(frames: int = 2):
    import torch

    from drivemtl.structures.batch import collate
    from drivemtl.structures.instances import Instances
    from drivemtl.structures.sample import Sample, SampleMeta

    samples = []
    for k in range(frames):
        boxes = torch.tensor([[10.0 + k, 10.0, 30.0 + k, 40.0], [50.0, 20.0, 80.0, 50.0]])
        inst = Instances(boxes, torch.tensor([2, 0]), torch.tensor([3, 8]))
        meta = SampleMeta(name=f"v/{k}.jpg", image_set="t", orig_size=(64, 96),
                          image_size=(64, 96), video="v", frame_index=k)  # fmt: skip
        samples.append(Sample(image=torch.zeros(3, 64, 96), meta=meta, instances=inst,
                              tasks=frozenset({"mot"})))  # fmt: skip
    return collate(samples)


def _tracked(batch, ids: list[list[int]]):
    import torch

    from drivemtl.structures.instances import Instances
    from drivemtl.structures.predictions import FramePrediction

    return [
        FramePrediction(meta=meta, detections=Instances(
            inst.boxes, inst.classes, torch.tensor(frame_ids), scores=torch.ones(len(inst))))
        for meta, inst, frame_ids in zip(batch.metas, batch.instances, ids, strict=True)
    ]  # fmt: skip


def test_mot_evaluator_scores_model_predictions() -> None:
    from drivemtl.evaluation.base import EVALUATORS
    from drivemtl.evaluation.tracking import MOTEvaluator

    assert EVALUATORS.get("mot") is MOTEvaluator
    batch = _mot_batch()
    perfect = MOTEvaluator()
    perfect.update(_tracked(batch, [[0, 1], [0, 1]]), batch)
    m = perfect.compute()
    for key in ("MOTA", "IDF1", "MOTP", "HOTA", "DetA", "AssA"):
        assert key in m
    assert m["MOTA"] == pytest.approx(100.0) and m["IDF1"] == pytest.approx(100.0)
    assert m["HOTA"] == pytest.approx(100.0) and m["AssA"] == pytest.approx(100.0)
    # Untracked (-1) and suppressed (-2) boxes are not tracks: misses.
    missing = MOTEvaluator()
    missing.update(_tracked(batch, [[0, -1], [0, -2]]), batch)
    m = missing.compute()
    assert m["FN"] == 2 and m["MOTA"] == pytest.approx(50.0)
    # A new id for the same object in frame 2: one identity switch; halves merge.
    switched = MOTEvaluator()
    switched.update(_tracked(batch, [[0, 1], [5, 1]]), batch)
    m = switched.compute()
    assert m["IDSw"] == 1 and m["MOTA"] == pytest.approx(75.0)
    assert m["AssA"] < 100.0
    # Frames fed to two evaluators (e.g. two DDP ranks) and merged score the same.
    first, second = MOTEvaluator(), MOTEvaluator()
    first_half, second_half = _mot_batch(), _mot_batch()
    first_half.labeled["mot"][1] = False
    second_half.labeled["mot"][0] = False
    first.update(_tracked(first_half, [[0, 1], [5, 1]]), first_half)
    second.update(_tracked(second_half, [[0, 1], [5, 1]]), second_half)
    first.merge(second)
    assert first.compute()["IDSw"] == 1
    unlabelled = _mot_batch()
    unlabelled.labeled["mot"][:] = False
    empty = MOTEvaluator()
    empty.update(_tracked(unlabelled, [[0, 1], [0, 1]]), unlabelled)
    assert math.isnan(empty.compute()["HOTA"])


def test_mot_ap_scores_the_tracked_boxes() -> None:
    """VTD's MOT AP: COCO box AP of the boxes the tracker outputs (ids ignored, untracked boxes
    left out), hand-computed with COCO's 101 recall points."""
    import torch

    from drivemtl.evaluation.tracking import MOTEvaluator
    from drivemtl.structures.instances import Instances

    batch = _mot_batch()

    def ap(ids: list[list[int]], extra: bool = False) -> float:
        predictions = _tracked(batch, ids)
        if extra:  # a tracked false positive of class 2, scored above the true boxes
            d = predictions[0].detections
            predictions[0].detections = Instances(
                torch.cat([d.boxes, torch.tensor([[60.0, 0.0, 90.0, 10.0]])]),
                torch.tensor([2, 0, 2]), torch.tensor([0, 1, 9]),
                scores=torch.tensor([0.5, 0.5, 0.9]))  # fmt: skip
            predictions[1].detections.scores = torch.tensor([0.5, 0.5])
        evaluator = MOTEvaluator()
        evaluator.update(predictions, batch)
        return evaluator.compute()["AP"]

    assert ap([[0, 1], [0, 1]]) == pytest.approx(100.0)
    assert ap([[0, 1], [5, 1]]) == pytest.approx(100.0)  # an identity switch: same boxes
    # The class-0 object is never tracked: its class scores 0, class 2 100.
    assert ap([[0, -1], [0, -2]]) == pytest.approx(50.0)
    # Class 2: FP (0.9), TP, TP -> interpolated precision 2/3 at every recall; class 0: 100.
    assert ap([[0, 1], [0, 1]], extra=True) == pytest.approx((100 * 2 / 3 + 100) / 2)
    # Frames fed to two evaluators and merged give the same AP.
    first, second = MOTEvaluator(), MOTEvaluator()
    first_half, second_half = _mot_batch(), _mot_batch()
    first_half.labeled["mot"][1] = False
    second_half.labeled["mot"][0] = False
    first.update(_tracked(first_half, [[0, -1], [0, -1]]), first_half)
    second.update(_tracked(second_half, [[0, -1], [0, -1]]), second_half)
    first.merge(second)
    assert first.compute()["AP"] == pytest.approx(50.0)
