"""The `eval-files` command: table, JSON output, one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from drivemtl.cli.errors import UsageError
from drivemtl.cli.eval_files import eval_files

app = typer.Typer()
app.command("eval-files")(eval_files)


@app.command("noop")
def _noop() -> None:
    """Second command so typer keeps sub-command names."""


def test_eval_files_writes_official_keys(fixtures_dir: Path, tmp_path: Path) -> None:
    b = fixtures_dir / "bdd100k/pose"
    out = tmp_path / "pose.json"
    result = CliRunner().invoke(app, ["eval-files", "--task", "pose", "--gt", str(b / "pose_sample.json"),
                                      "--pred", str(b / "pose_preds.json"), "--out", str(out)])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "AP50" in result.output
    data = json.loads(out.read_text())
    assert data["AP"] == pytest.approx(14.059405940594061, abs=1e-9)
    assert data["APl"] is None


def test_eval_files_unknown_task(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["eval-files", "--task", "nope", "--gt", str(tmp_path),
                                      "--pred", str(tmp_path)])  # fmt: skip
    assert isinstance(result.exception, UsageError)


def test_eval_files_seg_track_bitmask_folders(fixtures_dir: Path, tmp_path: Path) -> None:
    source = fixtures_dir / "bdd100k/label/segtrack_bitmask.png"
    for side in ("gt", "pred"):
        (tmp_path / side / "video").mkdir(parents=True)
        (tmp_path / side / "video" / "f.png").write_bytes(source.read_bytes())
    out = tmp_path / "mots.json"
    result = CliRunner().invoke(app, ["eval-files", "--task", "seg_track", "--gt", str(tmp_path / "gt"),
                                      "--pred", str(tmp_path / "pred"), "--out", str(out)])  # fmt: skip
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert data["MOTA"] == pytest.approx(100.0) and data["mMOTA"] == pytest.approx(100 / 8)


def test_eval_files_strict_stops_on_frames_the_official_tool_skips(
    fixtures_dir: Path, tmp_path: Path
) -> None:
    b = fixtures_dir / "bdd100k/pose"
    preds = json.loads((b / "pose_preds.json").read_text())
    pred = tmp_path / "pred.json"
    pred.write_text(json.dumps([*preds, {"name": "extra.jpg", "labels": []}]))
    args = ["eval-files", "--task", "pose", "--gt", str(b / "pose_sample.json"), "--pred", str(pred),
            "--out", str(tmp_path / "m.json")]  # fmt: skip
    for flags in ([], ["--lenient"]):  # the official treatment is the default; --lenient an alias
        result = CliRunner().invoke(app, [*args, *flags])
        assert result.exit_code == 0, result.output
        assert json.loads((tmp_path / "m.json").read_text())["AP"] == pytest.approx(
            14.059405940594061, abs=1e-9
        )  # the extra frame is left out, as the official evaluator does
    result = CliRunner().invoke(app, [*args, "--strict"])
    assert result.exception is not None and "extra.jpg" in str(result.exception)
    result = CliRunner().invoke(app, [*args, "--strict", "--lenient"])
    assert isinstance(result.exception, UsageError)
