"""Parity with the official BDD100K / Scalabel numbers on the real-format fixtures (to 1e-6)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from drivemtl.evaluation.base import EvaluationInputError
from drivemtl.evaluation.files import evaluate_files


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
        evaluate_files("pose", b / "pose_sample.json", pred)
    lenient = evaluate_files("pose", b / "pose_sample.json", pred, strict=False)
    assert lenient.skipped["prediction frame not in ground truth"] == 1
    assert lenient.metrics["AP"] == 0.0
    with pytest.raises(EvaluationInputError, match="unknown task"):
        evaluate_files("nope", b / "pose_sample.json", pred)
    with pytest.raises(EvaluationInputError, match="not found"):
        evaluate_files("pose", tmp_path / "missing.json", pred)
