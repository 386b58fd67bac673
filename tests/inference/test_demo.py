import json
import math

import pytest

from drivemtl.cli.main import main
from drivemtl.errors import DriveMTLError
from drivemtl.inference.demo import HEADLINES, DemoOptions, demo_config, run_demo
from drivemtl.structures.scalabel import load_frames


@pytest.mark.slow
def test_reduced_demo_runs_every_stage(tmp_path):
    out = tmp_path / "demo"
    result = run_demo(
        DemoOptions(
            out_dir=out,
            train_frames=10,
            val_frames=4,
            video_frames=8,
            video_val_frames=8,
            size=(96, 64),
            steps=3,
            batch_size=2,
            overlays=2,
            progress=False,
        )
    )
    assert result.report_md == out / "report.md" and result.report_html.is_file()
    text = result.report_md.read_text()
    for task in HEADLINES:
        assert f"| {task} |" in text
    assert {s.task for s in result.scores} == set(HEADLINES)
    for score in result.scores:
        assert not math.isnan(score.baseline)
    assert len(result.overlays) == 2 and all(
        p.read_bytes()[:4] == b"\x89PNG" for p in result.overlays
    )
    # The video part: a looping GIF of the 8-frame held-out clip, a strip of 4 of its frames
    # (drawn twice the frame size, 4-pixel gaps).
    from PIL import Image

    with Image.open(out / "video" / "tracked_clip.gif") as gif:
        assert gif.n_frames == 8 and gif.size == (192, 128)
    with Image.open(out / "video" / "tracked_strip.png") as strip:
        assert strip.size == (4 * 192 + 3 * 4, 128)
    assert not (out / "flow").exists()  # the demo leaves flow out (cost; see demo.py)
    assert "(video/tracked_clip.gif)" in text
    by_task = {s.task: s for s in result.scores}
    assert by_task["mot"].metric == "HOTA" and "flow" not in by_task
    frames = load_frames(result.predictions)
    assert len(frames) == 4
    assert json.loads(result.predictions.read_text())[0]["name"] == frames[0].name
    assert (out / "plots" / "losses.png").is_file()
    assert (out / "train" / "final.safetensors").is_file()
    # A second run replaces the earlier demo's folder instead of failing.
    again = run_demo(
        DemoOptions(
            out_dir=out,
            train_frames=4,
            val_frames=2,
            video_frames=2,
            video_val_frames=2,
            size=(64, 48),
            steps=1,
            batch_size=2,
            overlays=0,
            progress=False,
        )
    )
    assert again.report_md.is_file() and not (out / "overlays").exists()


def test_demo_refuses_a_foreign_folder_and_bad_sizes(tmp_path, capsys):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(DriveMTLError, match="was not written by `drivemtl demo`"):
        run_demo(DemoOptions(out_dir=foreign, progress=False))
    assert (foreign / "notes.txt").read_text() == "keep me"
    with pytest.raises(DriveMTLError, match="positive even numbers, got 95x64"):
        run_demo(DemoOptions(out_dir=tmp_path / "x", size=(95, 64)))
    try:
        code = main(["demo", "--out", str(tmp_path / "y"), "--size", "big"])
    except SystemExit as exc:
        code = exc.code
    assert code == 2 and "--size must look like WxH" in capsys.readouterr().err


def test_demo_config_scales_the_recipe(tmp_path):
    cfg = demo_config(DemoOptions(steps=90, batch_size=3, size=(320, 192), seed=7), tmp_path)
    stages = cfg.recipe.stages
    assert [s.steps for s in stages] == [60, 30]
    assert all(s.batch_size == 3 and s.sampler == "set_round_robin" for s in stages)
    assert cfg.seed == 7
    assert cfg.data.transforms.test_height == 192
    assert set(cfg.data.sets) == {"detection", "segmentation", "tracking"}
    assert str(cfg.data.sets["detection"].root).endswith("{split}/detection")
    tracking = cfg.data.sets["tracking"]
    assert str(tracking.root).endswith("video/{split}/tracking")
    assert tracking.tasks == ["mot", "mots"] and tracking.clip.sampling == "next"
    assert sorted(cfg.model.tasks) == sorted(HEADLINES)
