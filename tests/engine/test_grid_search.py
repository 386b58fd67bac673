"""The loss-weight grid search: every point trained and scored, Δ_T against single-task
baselines recomputed by hand from each point's own metrics.json, the best point picked, and the
`drivemtl grid-search` command's errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from engine_fixtures import make_config

from drivemtl.cli.main import main
from drivemtl.config import dump_config
from drivemtl.engine.grid_search import grid_search, parse_axis, weight_grid, with_weights
from drivemtl.engine.plan import RecipeError

STAGE = {"name": "joint", "steps": 2, "batch_size": 2, "optimizer": {"lr": 1e-2}}
KEYS = ["semantic/mIoU", "tagging/acc"]


def test_grid_axes_and_weights() -> None:
    assert parse_axis("semantic=50, 100") == ("semantic", [50.0, 100.0])
    with pytest.raises(RecipeError, match=r"--weights 'semantic': expected TASK=W1,W2"):
        parse_axis("semantic")
    grid = weight_grid({"semantic": [1, 2], "tagging": [3, 4]})
    assert grid == [
        {"semantic": 1.0, "tagging": 3.0}, {"semantic": 1.0, "tagging": 4.0},
        {"semantic": 2.0, "tagging": 3.0}, {"semantic": 2.0, "tagging": 4.0},
    ]  # fmt: skip
    config = make_config(Path("x"), [{**STAGE, "loss_weighting": {"weights": {"tagging": 0.5}}}])
    weighted = with_weights(config, {"semantic": 7.0})
    assert weighted.recipe.stages[0].loss_weighting.weights == {"tagging": 0.5, "semantic": 7.0}
    with pytest.raises(RecipeError, match=r"tasks \['depth'\] are not in model.tasks"):
        with_weights(config, {"depth": 1.0})
    dwa = make_config(Path("x"), [{**STAGE, "loss_weighting": {"type": "dwa"}}])
    with pytest.raises(RecipeError, match="uses loss weighting 'dwa'"):
        with_weights(dwa, {"semantic": 1.0})


@pytest.mark.slow
def test_every_point_is_scored_and_the_best_delta_wins(tiny_data: Path, tmp_path: Path) -> None:
    baseline = tmp_path / "stl.json"
    baseline.write_text(json.dumps({"semantic/mIoU": 20.0, "tagging/acc": 40.0, "x/y": 1}))
    config = make_config(tiny_data, [STAGE])
    result = grid_search(config, {"semantic": [0.1, 10.0]}, [baseline], KEYS, tmp_path / "grid")
    assert [p.weights for p in result.points] == [{"semantic": 0.1}, {"semantic": 10.0}]
    for point in result.points:
        scored = json.loads((point.run_dir / "eval" / "metrics.json").read_text())
        by_hand = 100 / 2 * ((scored["semantic/mIoU"] - 20) / 20
                             + (scored["tagging/acc"] - 40) / 40)  # fmt: skip
        assert point.delta == pytest.approx(by_hand, abs=1e-9)
        stage = json.loads((point.run_dir / "run.json").read_text())
        assert stage["stages"]  # trained
    written = json.loads((tmp_path / "grid" / "grid.json").read_text())
    assert written["best"]["weights"] == result.best.weights
    assert result.best.delta == max(p.delta for p in result.points)


def test_the_command_names_a_missing_baseline_key(tiny_data: Path, tmp_path: Path, capsys):
    config = tmp_path / "run.yaml"
    dump_config(make_config(tiny_data, [STAGE]), config)
    baseline = tmp_path / "stl.json"
    baseline.write_text(json.dumps({"semantic/mIoU": 20.0}))
    argv = ["grid-search", str(config), "--weights", "semantic=1,2", "--baseline", str(baseline),
            "--metric", "semantic/mIoU", "--metric", "depth/RMSE", "--out", str(tmp_path / "g")]  # fmt: skip
    assert main(argv) == 2
    assert "no baseline value for ['depth/RMSE']" in capsys.readouterr().err
    assert not (tmp_path / "g").exists()
