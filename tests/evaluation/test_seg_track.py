"""MOTS metrics on hand-computed cases, bitmask and RLE inputs agreeing, ignore regions, errors."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from faster_coco_eval.core import mask as mask_utils

from drivemtl.evaluation.base import EvaluationInputError
from drivemtl.evaluation.files import evaluate_files
from drivemtl.evaluation.seg_track import (
    SegTrackEvaluator,
    bitmask_overlaps,
    parse_bitmask,
    read_rgba,
)
from drivemtl.structures.bdd import THING_CLASSES
from drivemtl.structures.scalabel import Frame

CAR, PED = THING_CLASSES.index("car") + 1, THING_CLASSES.index("pedestrian") + 1
# per frame: list of (category id, instance id, flags, rows, cols)
GT = [
    [(CAR, 1, 0, slice(0, 4), slice(0, 4)), (PED, 2, 0, slice(4, 8), slice(4, 8))],
    [(CAR, 1, 0, slice(0, 4), slice(0, 4)), (PED, 2, 0, slice(4, 8), slice(4, 8))],
]
PRED = [
    [(CAR, 10, 0, slice(0, 4), slice(0, 4)), (PED, 20, 0, slice(4, 6), slice(4, 8))],  # IoU 1, 0.5
    [(CAR, 11, 0, slice(0, 4), slice(0, 4)), (CAR, 12, 0, slice(0, 2), slice(6, 8))],  # switch, FP
]


def _rgba(objects: list[tuple]) -> np.ndarray:
    out = np.zeros((8, 8, 4), np.uint8)
    for category, instance, flags, rows, cols in objects:
        out[rows, cols] = (category, flags, instance >> 8, instance & 255)
    return out


def _write(folder: Path, frames: list[list[tuple]], video: str = "v0") -> None:
    (folder / video).mkdir(parents=True, exist_ok=True)
    for k, objects in enumerate(frames):
        path = folder / video / f"{video}-{k:07d}.png"
        cv2.imwrite(str(path), cv2.cvtColor(_rgba(objects), cv2.COLOR_RGBA2BGRA))


def _frames(frames: list[list[tuple]], video: str = "v0") -> list[Frame]:
    out = []
    for k, objects in enumerate(frames):
        labels = []
        for category, instance, flags, rows, cols in objects:
            mask = np.zeros((8, 8), np.uint8, order="F")
            mask[rows, cols] = 1
            rle = mask_utils.encode(np.asfortranarray(mask))
            attributes = {"crowd": bool(flags & 2), "ignored": bool(flags & 1)}
            labels.append({"id": str(instance), "category": THING_CLASSES[category - 1],
                           "attributes": attributes, "score": 1.0,
                           "rle": {"counts": rle["counts"].decode(), "size": [8, 8]}})  # fmt: skip
        out.append(Frame.model_validate({"name": f"{video}-{k}.jpg", "videoName": video,
                                         "frameIndex": k, "labels": labels}))  # fmt: skip
    return out


def test_hand_computed_video_from_bitmasks(tmp_path: Path) -> None:
    _write(tmp_path / "gt", GT)
    _write(tmp_path / "pred", PRED)
    m = evaluate_files("seg_track", tmp_path / "gt", tmp_path / "pred").metrics
    # car: 2 objects, 1 match + 1 switch, 1 FP -> MOTA 0, IDF1 2*1/(2+3); pedestrian: match at
    # IoU 0.5 then a miss -> MOTA 50, MOTP 50, IDF1 2*1/(2+1)
    assert m["MOTA/car"] == pytest.approx(0.0) and m["IDSw/car"] == 1 and m["FP/car"] == 1
    assert m["IDF1/car"] == pytest.approx(40.0)
    assert m["MOTA/pedestrian"] == pytest.approx(50.0)
    assert m["MOTP/pedestrian"] == pytest.approx(50.0)
    assert m["IDF1/pedestrian"] == pytest.approx(200 / 3)
    assert m["MOTA"] == pytest.approx(25.0)  # 1 - (1 miss + 1 switch + 1 FP) / 4
    assert m["MOTP"] == pytest.approx((1 - 0.5 / 3) * 100)
    assert m["IDF1"] == pytest.approx(50.0)  # 2 * (1 + 1) / (4 + 4)
    assert m["mMOTA"] == pytest.approx(50 / 8)  # classes without objects count as 0
    assert m["mIDF1"] == pytest.approx((40 + 200 / 3) / 8)
    assert np.isnan(m["MOTA/bus"])
    assert 0 < m["HOTA"] < 100 and 0 < m["AssA"] < 100


def test_rle_frames_give_the_bitmask_numbers(tmp_path: Path) -> None:
    _write(tmp_path / "gt", GT)
    _write(tmp_path / "pred", PRED)
    from_bitmasks = evaluate_files("seg_track", tmp_path / "gt", tmp_path / "pred").metrics
    evaluator = SegTrackEvaluator()
    evaluator.update_frames(_frames(GT), _frames(PRED))
    from_rle = evaluator.compute()
    for key, value in from_bitmasks.items():
        assert from_rle[key] == pytest.approx(value, nan_ok=True), key


def test_crowd_region_drops_an_unmatched_prediction_inside_it(tmp_path: Path) -> None:
    gt = [[(CAR, 1, 0, slice(0, 4), slice(0, 4)), (CAR, 5, 2, slice(4, 8), slice(0, 8))]]
    inside = [[(CAR, 7, 0, slice(5, 7), slice(0, 4))]]  # wholly in the crowd region
    across = [[(PED, 7, 0, slice(2, 6), slice(4, 8))]]  # half inside: 8 of 16 px, not > 0.5
    for pred, fp in ((inside, 0), (across, 1)):
        evaluator = SegTrackEvaluator()
        evaluator.update_frames(_frames(gt), _frames(pred))
        m = evaluator.compute()
        assert m["FP"] == fp and m["FN"] == 1
    _write(tmp_path / "gt", gt)
    _write(tmp_path / "pred", inside)
    assert evaluate_files("seg_track", tmp_path / "gt", tmp_path / "pred").metrics["FP"] == 0


def test_overlapping_predictions_and_unknown_category() -> None:
    overlapping = [[(CAR, 3, 0, slice(0, 4), slice(0, 4)), (CAR, 4, 0, slice(2, 6), slice(2, 6))]]
    with pytest.raises(EvaluationInputError, match="overlap"):
        SegTrackEvaluator().update_frames(_frames(GT[:1]), _frames(overlapping))
    lenient = SegTrackEvaluator(strict=False)
    lenient.update_frames(_frames(GT[:1]), _frames(overlapping))
    assert lenient.compute()["FN"] == 2 and sum(lenient.skipped.values()) == 1
    bad = _frames(PRED[:1])
    bad[0].labels[0].category = "ufo"
    with pytest.raises(EvaluationInputError, match="unknown category 'ufo'"):
        SegTrackEvaluator().update_frames(_frames(GT[:1]), bad)


def test_bitmask_parsing_and_overlaps() -> None:
    objects = parse_bitmask(_rgba(GT[0] + [(CAR, 300, 2, slice(0, 1), slice(7, 8))]))
    assert objects.ids.tolist() == [1, 2, 300]  # B * 256 + A, sorted
    assert objects.categories.tolist() == [CAR, PED, CAR]
    assert objects.flags.tolist() == [0, 0, 2]
    pred = parse_bitmask(_rgba(PRED[0]))
    ious, iofs = bitmask_overlaps(objects.instance_map, 3, pred.instance_map, 2)
    assert ious.tolist() == [[1.0, 0.0], [0.0, 0.5], [0.0, 0.0]]
    assert iofs.tolist() == [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]
    two_categories = _rgba(GT[0])
    two_categories[0, 0, 0] = PED
    with pytest.raises(EvaluationInputError, match="instance 1 has more than one category"):
        parse_bitmask(two_categories, "x.png")


def test_real_bdd_bitmask_against_itself(fixtures_dir: Path, tmp_path: Path) -> None:
    source = fixtures_dir / "bdd100k/label/segtrack_bitmask.png"
    objects = parse_bitmask(read_rgba(source))
    assert objects.ids.tolist() == [1, 2, 3] and set(objects.categories.tolist()) == {CAR}
    for side in ("gt", "pred"):
        (tmp_path / side / "video").mkdir(parents=True)
        (tmp_path / side / "video" / "f.png").write_bytes(source.read_bytes())
    m = evaluate_files("seg_track", tmp_path / "gt", tmp_path / "pred").metrics
    assert m["MOTA"] == pytest.approx(100.0) and m["IDF1"] == pytest.approx(100.0)
    assert m["HOTA"] == pytest.approx(100.0) and m["FP"] == 0
