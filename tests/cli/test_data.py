"""`drivemtl data synth | show | stats` through the typer sub-app."""

from __future__ import annotations

import cv2
import pytest
from typer.testing import CliRunner

from drivemtl.cli.data import app
from drivemtl.cli.errors import UsageError

runner = CliRunner()


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "ds"
    result = runner.invoke(app, ["synth", "--preset", "all", "--out", str(out), "--num-frames", "2",
                                 "--size", "96x54", "--seed", "3", "--no-progress"])  # fmt: skip
    assert result.exit_code == 0, result.output
    return out


def test_synth_writes_a_dataset(dataset):
    assert (dataset / "dataset.yaml").is_file()
    assert len(list((dataset / "all" / "images" / "vid0000").glob("*.jpg"))) == 2


def test_stats_lists_sets_and_counts(dataset):
    result = runner.invoke(app, ["stats", str(dataset)], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "all: 2 frames, 1 videos" in result.output
    assert "files masks/semantic" in result.output


def test_show_draws_a_mosaic_of_every_label(dataset, tmp_path):
    out = tmp_path / "mosaic.png"
    result = runner.invoke(
        app, ["show", str(dataset), "--out", str(out), "--frame", "vid0000/vid0000-0000001.jpg"]
    )
    assert result.exit_code == 0, result.output
    mosaic = cv2.imread(str(out))
    # image + 8 label maps in a 3-column grid of 96x54 tiles
    assert mosaic.shape == (3 * 54, 3 * 96, 3)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--preset", "nope"], "unknown preset 'nope'"),
        (["--size", "640x361"], "even"),
        (["--size", "big"], "not WxH"),
    ],
)
def test_synth_bad_input_is_a_usage_error(tmp_path, args, message):
    result = runner.invoke(app, ["synth", "--out", str(tmp_path / "o"), "--no-progress", *args])
    assert isinstance(result.exception, UsageError)
    assert message in str(result.exception)


def test_synth_refuses_a_non_empty_folder(tmp_path):
    (tmp_path / "file.txt").write_text("x")
    result = runner.invoke(
        app,
        ["synth", "--out", str(tmp_path), "--num-frames", "1", "--size", "32x18", "--no-progress"],
    )
    assert isinstance(result.exception, UsageError)
    assert "not empty" in str(result.exception) and "--overwrite" in str(result.exception)


def test_show_and_stats_on_a_folder_without_card(tmp_path):
    result = runner.invoke(app, ["stats", str(tmp_path)])
    assert isinstance(result.exception, UsageError) and "dataset.yaml" in str(result.exception)
