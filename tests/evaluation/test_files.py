"""Parity with the official BDD100K / Scalabel numbers on the real-format fixtures (to 1e-6)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from drivemtl.evaluation.base import EvaluationInputError
from drivemtl.evaluation.coco import PRED_NOT_IN_GT
from drivemtl.evaluation.files import evaluate_files

REFS = Path(__file__).parent / "data/refs"
OFFICIAL = json.loads((REFS / "official.json").read_text())
OFFICIAL_FIXTURES = json.loads((REFS / "official_fixtures.json").read_text())
# official row names that DriveMTL reports under its summary key
ALIASES = {"IoU/AVERAGE": "mIoU", "Acc/AVERAGE": "mAcc"}


def _close(metrics: dict[str, float], expected: dict[str, float]) -> None:
    for key, value in expected.items():
        if math.isnan(value):
            assert math.isnan(metrics[key]), key
        else:
            assert metrics[key] == pytest.approx(value, abs=1e-6), key


def test_detection_matches_official(fixtures_dir: Path) -> None:
    b = fixtures_dir / "bdd100k"
    result = evaluate_files("det", b / "box_track/track_sample_anns.json",
                            b / "det/bbox_predictions.json", b / "det/det_configs.toml")  # fmt: skip
    _close(result.metrics, {
        "AP": 34.029392668401016, "AP50": 55.323900409039695, "AP75": 34.93873359997877,
        "APs": 20.91624813537171, "APm": 48.4364652499885, "APl": 64.28530466767323,
        "AR100": 40.95160450224777, "AP/pedestrian": 41.37670388442971,
        "AP/rider": 41.70985553789942, "AP/car": 66.14185518719762, "AP/truck": 50.07078219289907,
        "AP/bus": 0.3025302530253025, "AP/motorcycle": 4.574628954954978, "AP/train": math.nan,
        "AP/bicycle": math.nan, "AP/traffic light": math.nan, "AP/traffic sign": math.nan,
    })  # fmt: skip


def test_gt_of_an_unlisted_category_is_left_out_with_a_warning(
    fixtures_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    b = fixtures_dir / "bdd100k"
    frames = json.loads((b / "box_track/track_sample_anns.json").read_text())
    items = frames if isinstance(frames, list) else frames["frames"]
    extra = {"id": "u1", "category": "unicorn", "box2d": {"x1": 1, "y1": 1, "x2": 50, "y2": 50}}
    items[0]["labels"] = [*(items[0].get("labels") or []), extra]
    gt = tmp_path / "gt.json"
    gt.write_text(json.dumps(frames))
    args = (b / "det/bbox_predictions.json", b / "det/det_configs.toml")
    official = evaluate_files("det", b / "box_track/track_sample_anns.json", *args)
    with caplog.at_level("WARNING", logger="drivemtl"):
        result = evaluate_files("det", gt, *args)
    assert result.metrics == pytest.approx(official.metrics, nan_ok=True)  # what the toolkit gives
    assert "1 label(s) of categories the config does not list left out" in caplog.text
    assert "'unicorn': 1" in caplog.text


def test_mot_matches_official(fixtures_dir: Path) -> None:
    b = fixtures_dir / "bdd100k/box_track"
    result = evaluate_files("box_track", b / "track_sample_anns.json",
                            b / "track_predictions.json", b / "box_track_configs.toml")  # fmt: skip
    _close(result.metrics, {
        "MOTA": 64.20070762302991, "MOTP": 87.16143945073146, "IDF1": 71.01073676416142,
        "FP": 126, "FN": 942, "IDSw": 45, "MT": 62, "PT": 47, "ML": 33, "FM": 66,
        "mMOTA": 24.324204637536685, "mIDF1": 32.24781943655838, "mMOTP": 50.01285067174096,
    })  # fmt: skip
    assert 0 < result.metrics["HOTA"] < 100


def test_pose_matches_official(fixtures_dir: Path) -> None:
    b = fixtures_dir / "bdd100k/pose"
    result = evaluate_files("pose", b / "pose_sample.json", b / "pose_preds.json",
                            b / "pose_configs.toml")  # fmt: skip
    _close(result.metrics, {"AP": 14.059405940594061, "AP50": 25.247524752475247,
                            "AP75": 12.871287128712872, "AR": 27.500000000000004})  # fmt: skip


def test_semantic_rle_matches_official(fixtures_dir: Path) -> None:
    b = fixtures_dir / "bdd100k/sem_seg"
    result = evaluate_files("sem_seg", b / "sem_seg_sample.json", b / "sem_seg_preds.json",
                            b / "sem_seg_configs.toml")  # fmt: skip
    _close(result.metrics, {"mIoU": 77.69367702513847, "mAcc": 85.08073850792114,
                            "fIoU": 95.96580841723501, "pAcc": 97.59265266143856})  # fmt: skip


def test_semantic_bitmask_matches_toolkit_test(fixtures_dir: Path) -> None:
    # bdd100k/eval/seg_test.py: hist [[93, 1], [4, 2]] -> road 93/98, sidewalk 2/7
    b = fixtures_dir / "bdd100k/seg"
    result = evaluate_files("sem_seg", b / "gt", b / "pred")
    _close(result.metrics, {"IoU/road": 9300 / 98, "IoU/sidewalk": 200 / 7,
                            "mIoU": (9300 / 98 + 200 / 7) / 2})  # fmt: skip


def test_lane_matches_toolkit_test(fixtures_dir: Path) -> None:
    # bdd100k/eval/lane_test.py expected table (rounded to 1e-8 there)
    b = fixtures_dir / "bdd100k/lane"
    m = evaluate_files("lane", b / "gts", b / "res").metrics
    expected = {
        "parallel": (70.53328267, 80.9831119, 100.0), "double yellow": (75.33066961, 79.34917317, 100.0),
        "road curb": (71.02916505, 86.25984707, 100.0), "single yellow": (94.79621737, 100.0, 100.0),
        "DIRECTION": (85.26664133, 90.49155595, 100.0), "CATEGORY": (92.17697636, 95.70112753, 100.0),
    }  # fmt: skip
    for name, values in expected.items():
        for r, v in zip((1, 2, 5), values, strict=True):
            assert m[f"F1_pix{r}/{name}"] == pytest.approx(v, abs=1e-6)
    for r, v in zip((1, 2, 5), (87.57008634, 92.22807981, 100.0), strict=True):
        assert m[f"F1_pix{r}"] == pytest.approx(v, abs=1e-6)


def test_bad_input_is_reported(fixtures_dir: Path, tmp_path: Path) -> None:
    b = fixtures_dir / "bdd100k/pose"
    pred = tmp_path / "pred.json"
    pred.write_text('[{"name": "not-a-frame.jpg", "labels": []}]')
    with pytest.raises(EvaluationInputError, match=r"not-a-frame\.jpg"):
        evaluate_files("pose", b / "pose_sample.json", pred, strict=True)
    official = evaluate_files("pose", b / "pose_sample.json", pred)
    assert official.skipped[PRED_NOT_IN_GT] == 1
    assert official.examples[PRED_NOT_IN_GT] == "not-a-frame.jpg"
    assert official.metrics["AP"] == 0.0
    with pytest.raises(EvaluationInputError, match="unknown task"):
        evaluate_files("nope", b / "pose_sample.json", pred)
    with pytest.raises(EvaluationInputError, match="not found"):
        evaluate_files("pose", tmp_path / "missing.json", pred)


def _equal_to_official(metrics: dict[str, float], official: dict[str, float | str | None]) -> float:
    """Every official key present and equal to 1e-6 (None = NaN, "-inf" / "inf" exact); returns
    the worst absolute deviation."""
    worst = 0.0
    for key, expected in official.items():
        ours = metrics[ALIASES.get(key, key)]
        if expected is None:
            assert math.isnan(ours), f"{key}: {ours} where the official gives NaN"
        elif isinstance(expected, str):
            assert ours == float(expected), f"{key}: {ours} vs {expected}"
        else:
            assert ours == pytest.approx(expected, abs=1e-6), key
            worst = max(worst, abs(ours - expected))
    return worst


@pytest.mark.parametrize("case", sorted(OFFICIAL))
def test_generated_inputs_match_official(case: str) -> None:
    """Generated inputs (benchmarks/official_references.py): jitter, drops, extra detections,
    id swaps, missing / extra / repeated frames, a missing video, overlapping masks."""
    ref = OFFICIAL[case]
    folder = REFS / case
    config = folder / ref["config"] if ref["config"] else None
    result = evaluate_files(ref["task"], folder / ref["gt"], folder / ref["pred"], config)
    assert len(ref["metrics"]) >= 8
    _equal_to_official(result.metrics, ref["metrics"])


@pytest.mark.parametrize("case", sorted(OFFICIAL_FIXTURES))
def test_fixtures_match_official_on_every_key(case: str, fixtures_dir: Path) -> None:
    ref = OFFICIAL_FIXTURES[case]
    b = fixtures_dir / "bdd100k"
    config = b / ref["config"] if ref["config"] else None
    result = evaluate_files(ref["task"], b / ref["gt"], b / ref["pred"], config)
    _equal_to_official(result.metrics, ref["metrics"])


def test_class_means_count_classes_without_ground_truth_as_zero() -> None:
    """A predicted class without ground truth has MOTA -inf; the class means count it as 0."""
    ref = OFFICIAL["box_track"]
    assert ref["metrics"]["MOTA/train"] == "-inf"
    folder = REFS / "box_track"
    m = evaluate_files("box_track", folder / "gt.json", folder / "pred.json",
                       folder / "config.toml").metrics  # fmt: skip
    assert m["MOTA/train"] == -math.inf
    leaf = ["pedestrian", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle"]
    finite = [m[f"MOTA/{c}"] if math.isfinite(m[f"MOTA/{c}"]) else 0.0 for c in leaf]
    assert m["mMOTA"] == pytest.approx(sum(finite) / 8, abs=1e-9)
    assert math.isfinite(m["mMOTA"]) and m["FP/AVERAGE"] == sum(m[f"FP/{c}"] for c in leaf)


def _write(path: Path, frames: list[dict]) -> Path:
    path.write_text(json.dumps(frames))
    return path


def test_repeated_ground_truth_frame_is_two_images_unless_strict(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    box = {"x1": 10, "y1": 10, "x2": 59, "y2": 59}
    car = {"id": "1", "category": "car", "box2d": box}
    gt = _write(tmp_path / "gt.json", [{"name": "a.jpg", "labels": [car]},
                                       {"name": "a.jpg", "labels": [car, {**car, "id": "2"}]}])  # fmt: skip
    pred = _write(tmp_path / "pred.json", [{"name": "a.jpg", "labels": [{**car, "score": 0.9}]}])
    with caplog.at_level("WARNING", logger="drivemtl"):
        result = evaluate_files("det", gt, pred)
    # two images, each with the one prediction: 2 of 3 ground-truth boxes found, precision 1
    assert result.metrics["AR100"] == pytest.approx(100 * 2 / 3)
    assert "given more than once" in caplog.text and "'a.jpg'" in caplog.text
    with pytest.raises(EvaluationInputError, match=r"more than once, e\.g\. 'a\.jpg'"):
        evaluate_files("det", gt, pred, strict=True)


def test_repeated_prediction_frame_last_copy_counts(tmp_path: Path) -> None:
    box = {"x1": 10, "y1": 10, "x2": 59, "y2": 59}
    far = {"x1": 300, "y1": 300, "x2": 349, "y2": 349}
    gt = _write(tmp_path / "gt.json", [{"name": "a.jpg", "labels": [
        {"id": "1", "category": "car", "box2d": box}]}])  # fmt: skip
    hit = {"id": "1", "category": "car", "box2d": box, "score": 0.9}
    miss = {**hit, "box2d": far}
    first_hit = _write(tmp_path / "p1.json", [{"name": "a.jpg", "labels": [hit]},
                                              {"name": "a.jpg", "labels": [miss]}])  # fmt: skip
    last_hit = _write(tmp_path / "p2.json", [{"name": "a.jpg", "labels": [miss]},
                                             {"name": "a.jpg", "labels": [hit]}])  # fmt: skip
    assert evaluate_files("det", gt, first_hit).metrics["AP"] == 0.0
    assert evaluate_files("det", gt, last_hit).metrics["AP"] == pytest.approx(100.0)
    with pytest.raises(EvaluationInputError, match=r"more than once, e\.g\. 'a\.jpg'"):
        evaluate_files("det", gt, last_hit, strict=True)


def test_tracking_refuses_a_repeated_ground_truth_frame(tmp_path: Path) -> None:
    frame = {"name": "a.jpg", "videoName": "v", "frameIndex": 0, "labels": []}
    gt = _write(tmp_path / "gt.json", [frame, frame])
    pred = _write(tmp_path / "pred.json", [frame])
    with pytest.raises(EvaluationInputError, match="official tracking evaluation refuses"):
        evaluate_files("box_track", gt, pred)


def test_seg_track_prediction_frames_outside_the_ground_truth_are_left_out(tmp_path: Path) -> None:
    ref = OFFICIAL["seg_track"]
    folder = REFS / "seg_track"
    frames = json.loads((folder / "pred.json").read_text())
    extra = [{**frames[0], "name": "extra.jpg", "frameIndex": 99},
             {**frames[0], "name": "other.jpg", "videoName": "not-a-video"}]  # fmt: skip
    pred = _write(tmp_path / "pred.json", frames + extra)
    result = evaluate_files("seg_track", folder / "gt.json", pred, folder / "config.toml")
    _equal_to_official(result.metrics, ref["metrics"])
    assert result.skipped[PRED_NOT_IN_GT] == 2
    with pytest.raises(EvaluationInputError, match=r"extra\.jpg"):
        evaluate_files("seg_track", folder / "gt.json", pred, folder / "config.toml", strict=True)
