"""Tagging evaluation against the official Scalabel numbers (tests/evaluation/data/tagging_*)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from drivemtl.evaluation.base import EvaluationInputError
from drivemtl.evaluation.files import evaluate_files
from drivemtl.evaluation.tagging import TaggingEvaluator

DATA = Path(__file__).parent / "data"
GT, PRED = DATA / "tagging_gt.json", DATA / "tagging_pred.json"
OFFICIAL: dict[str, dict[str, float | None]] = json.loads(
    (DATA / "tagging_official.json").read_text()
)["cases"]


def _assert_official(metrics: dict[str, float], expected: dict[str, float | None]) -> None:
    """Same keys as the official summary, values within 1e-6 (None = NaN)."""
    assert set(metrics) == set(expected)
    for key, want in expected.items():
        if want is None:
            assert math.isnan(metrics[key]), key
        else:
            assert metrics[key] == pytest.approx(want, abs=1e-6), key


@pytest.mark.parametrize("config", sorted(OFFICIAL))
def test_eval_files_matches_official(config: str) -> None:
    result = evaluate_files("tagging", GT, PRED, DATA / config)
    _assert_official(result.metrics, OFFICIAL[config])
    assert not result.skipped


def test_default_attributes_are_the_bdd100k_ones() -> None:
    result = evaluate_files("tagging", GT, PRED)
    _assert_official(result.metrics, OFFICIAL["tagging_config.toml"])


def test_undefined_is_a_class() -> None:
    """'undefined' ground truth counts like any other value, as in the official evaluation."""
    gt = _frames(GT)
    n_undefined = sum(f["attributes"]["weather"] == "undefined" for f in gt if "attributes" in f)
    assert n_undefined > 0
    metrics = evaluate_files("tagging", GT, PRED).metrics
    official = OFFICIAL["tagging_config.toml"]["accuracy/WEATHER"]
    assert metrics["accuracy/WEATHER"] == pytest.approx(official)  # 80.0; 76.9 without them


def test_missing_prediction_strict_and_lenient(tmp_path: Path) -> None:
    preds = _frames(PRED)
    path = tmp_path / "pred.json"
    path.write_text(json.dumps(preds[1:]))
    with pytest.raises(EvaluationInputError, match="no prediction"):
        evaluate_files("tagging", GT, path, strict=True)
    result = evaluate_files("tagging", GT, path)
    assert result.skipped == {"ground-truth frame with no prediction": 1}


def test_unknown_predicted_value_strict_and_lenient(tmp_path: Path) -> None:
    preds = _frames(PRED)
    preds[0]["attributes"]["weather"] = "sunny"
    path = tmp_path / "pred.json"
    path.write_text(json.dumps(preds))
    with pytest.raises(EvaluationInputError, match="unknown predicted weather"):
        evaluate_files("tagging", GT, path, strict=True)
    result = evaluate_files("tagging", GT, path)
    assert result.skipped == {"unknown predicted weather": 1}


def test_config_without_tag_groups_is_rejected(tmp_path: Path) -> None:
    config = tmp_path / "flat.toml"
    config.write_text('[[categories]]\nname = "car"\n')
    with pytest.raises(EvaluationInputError, match="subcategories"):
        evaluate_files("tagging", GT, PRED, config)


def test_model_path_keys_and_macro_average() -> None:
    ev = TaggingEvaluator({"weather": ("clear", "rainy", "foggy")})
    ev.add(np.array([0, 0, 1, 1, 255]), np.array([0, 1, 1, 1, 2]))
    assert ev.compute() == {"acc/weather": 75.0, "acc": 75.0}
    official = ev.compute_official()
    # clear: p 1, r 0.5; rainy: p 2/3, r 1; foggy has neither ground truth nor predictions
    assert official["precision/WEATHER"] == pytest.approx((1 + 2 / 3) / 2 * 100)
    assert official["recall/WEATHER"] == pytest.approx(75.0)
    assert official["f1_score/WEATHER"] == pytest.approx((2 / 3 + 0.8) / 2 * 100)
    assert official["accuracy"] == 75.0


def test_merge_adds_counts() -> None:
    a, b = TaggingEvaluator(), TaggingEvaluator()
    a.add(np.array([[2, 4, 0]]), np.array([[2, 4, 1]]))
    b.add(np.array([[2, 4, 0]]), np.array([[3, 4, 0]]))
    a.merge(b)
    assert a.compute()["acc/weather"] == 50.0 and a.compute()["acc/timeofday"] == 50.0


def _frames(path: Path) -> list[dict]:
    """The raw frame dicts of a Scalabel JSON file."""
    return json.loads(path.read_text())
