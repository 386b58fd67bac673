"""Lane JSON: byte encoding, pixels against the official to_mask, scores against the toolkit.

The reference data in data/lane_json come from benchmarks/official_lane_json.py (bdd100k 1.0.1
to_mask + evaluate_lane_marking on seeded, perturbed lanes).
"""

from __future__ import annotations

import json
import re
import shutil
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest

from drivemtl.evaluation.base import EvaluationInputError
from drivemtl.evaluation.files import evaluate_files
from drivemtl.evaluation.lane_json import (
    NOT_A_LANE,
    is_lane_json,
    lane_byte_value,
    lane_frames,
    mask_name,
    rasterise_lane_frame,
)
from drivemtl.structures.scalabel import Frame, Label, Poly2D

DATA = Path(__file__).parent / "data" / "lane_json"
SIZES = {"small": (360, 640), "default": (720, 1280)}
OFFICIAL = json.loads((DATA / "official.json").read_text(encoding="utf-8"))


def _lane(category: str, attributes: dict | None, vertices: list, types: str = "") -> Label:
    poly = Poly2D(vertices=vertices, types=types or "L" * len(vertices), closed=False)
    return Label(id="l", category=category, attributes=attributes, poly2d=[poly])


def test_lane_byte_value_hand_computed() -> None:
    # category index + (direction << 5) + (style << 4), BDD100K lane byte
    vertical_dashed = {"laneDirection": "vertical", "laneStyle": "dashed"}
    assert lane_byte_value(_lane("single yellow", vertical_dashed, [[0, 0], [1, 1]]), "f") == 55
    assert lane_byte_value(_lane("road curb", None, [[0, 0], [1, 1]]), "f") == 4  # defaults
    assert lane_byte_value(_lane("crosswalk", {"laneStyle": "dashed"}, [[0, 0]]), "f") == 16
    assert lane_byte_value(_lane("lane/single white", None, [[0, 0]]), "f") is None
    with pytest.raises(
        EvaluationInputError, match=re.escape("frame 'f.jpg' label 'l': laneStyle 'dotted'")
    ):
        lane_byte_value(_lane("crosswalk", {"laneStyle": "dotted"}, [[0, 0]]), "f.jpg")


def test_hand_drawn_frame_order_and_skips() -> None:
    # a horizontal stroke from pixel centre (10.5, 10.5) to (20.5, 10.5), 100/72 px wide, covers
    # rows 9..11 (y 9.81..11.19) and columns 10..20 (x 10.5..20.5): 33 pixels
    first = _lane("single white", None, [[10.2, 10.3], [20.4, 10.3]])
    later = _lane("double yellow", {"laneStyle": "dashed"}, [[15, 0], [15, 30]])  # x = 14..16
    car = Label(id="c", category="car", poly2d=first.poly2d)
    notes: Counter[str] = Counter()
    byte = rasterise_lane_frame(Frame(name="a.jpg", labels=[first, car, later]), (30, 40), notes)
    expected = np.full((30, 40), 255, np.uint8)
    expected[9:12, 10:21] = 6
    expected[:, 14:17] = 3 + 16  # drawn later, on top
    np.testing.assert_array_equal(byte, expected)
    assert notes == Counter({NOT_A_LANE: 1})
    empty = rasterise_lane_frame(Frame(name="b.jpg", labels=None), (4, 5))
    assert (empty == 255).all()


def test_label_255_vanishes_as_in_to_mask() -> None:
    # to_mask writes label n as (R, G) = (n >> 8, n % 255) and reads back R * 256 + G: the 255th
    # lane reads back as 0 (not drawn), the 256th as 257 (not drawn either: only 256 labels).
    # Label i is a vertical stroke at x = 4 i + 0.2, snapped to 4 i + 0.5: columns 4 i - 1 .. 4 i + 1
    labels = [_lane("single white", None, [[4 * i + 0.2, 0], [4 * i + 0.2, 3]]) for i in range(256)]
    byte = rasterise_lane_frame(Frame(name="n.jpg", labels=labels), (4, 1030))
    assert (byte[:, 1011:1014] == 6).all()  # the 254th label (i = 253)
    assert (byte[:, 1015:1018] == 255).all()  # the 255th
    assert (byte[:, 1019:1022] == 255).all()  # the 256th
    assert (byte[:, 1014] == 255).all() and (byte[:, 1010] == 255).all()


@pytest.mark.parametrize("case", ["small", "default"])
def test_pixels_equal_official_to_mask(case: str) -> None:
    for side, source in (("gt", f"{case}_gt.json"), ("pred", f"{case}_pred_shifted.json")):
        frames = lane_frames(DATA / source)
        official = sorted((DATA / "masks" / f"{case}_{side}").glob("*.png"))
        assert sorted(frames) == [p.name for p in official]
        for path in official:
            ours = rasterise_lane_frame(frames[path.name], SIZES[case])
            np.testing.assert_array_equal(ours, cv2.imread(str(path), cv2.IMREAD_UNCHANGED))


@pytest.mark.parametrize("key", sorted(OFFICIAL))
def test_scores_equal_official(key: str) -> None:
    case, mode = key.split("/")
    config = DATA / "config_small.toml" if case == "small" else None
    gt, pred = DATA / f"{case}_gt.json", DATA / f"{case}_pred_{mode}.json"
    metrics = evaluate_files("lane", gt, pred, config).metrics
    reference = OFFICIAL[key]
    assert len(reference) == 48
    for name, value in reference.items():
        assert metrics[name] == pytest.approx(value, abs=1e-6), name


def test_json_against_png_folder(tmp_path: Path) -> None:
    # ground truth as JSON, prediction as the official masks of the shifted prediction
    masks = tmp_path / "pred"
    shutil.copytree(DATA / "masks" / "small_pred", masks)
    metrics = evaluate_files("lane", DATA / "small_gt.json", masks).metrics  # size from the PNGs
    for name, value in OFFICIAL["small/shifted"].items():
        assert metrics[name] == pytest.approx(value, abs=1e-6), name


def test_inputs_and_errors(tmp_path: Path) -> None:
    assert is_lane_json(DATA / "small_gt.json") and not is_lane_json(DATA / "masks" / "small_gt")
    assert mask_name("videos/abc.jpg") == "abc.png"
    doubled = json.loads((DATA / "small_gt.json").read_text(encoding="utf-8"))[:1] * 2
    doubled[1] = dict(doubled[1], name="other/" + doubled[1]["name"])
    (tmp_path / "dup.json").write_text(json.dumps(doubled), encoding="utf-8")
    with pytest.raises(
        EvaluationInputError, match=re.escape("both give lane mask 'small-lane-00.png'")
    ):
        lane_frames(tmp_path / "dup.json")
    extra = json.loads((DATA / "small_pred_exact.json").read_text(encoding="utf-8"))
    extra.append({"name": "nowhere.jpg", "labels": []})
    (tmp_path / "extra.json").write_text(json.dumps(extra), encoding="utf-8")
    gt, config = DATA / "small_gt.json", DATA / "config_small.toml"
    with pytest.raises(EvaluationInputError, match="1 lane predictions have no ground truth"):
        evaluate_files("lane", gt, tmp_path / "extra.json", config, strict=True)
    result = evaluate_files("lane", gt, tmp_path / "extra.json", config)
    assert result.metrics["F1_pix1"] == 100.0
    assert sum("without ground truth" in reason for reason in result.skipped) == 1
