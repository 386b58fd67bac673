import math
from html.parser import HTMLParser

from drivemtl.inference.report import DemoReport, TaskScore, plot_loss_curves, write_report


def test_beats_baseline_respects_direction_and_nan():
    assert TaskScore("semantic", "mIoU", 40.0, 10.0, "majority").beats_baseline
    assert not TaskScore("semantic", "mIoU", 10.0, 10.0, "majority").beats_baseline
    assert TaskScore("depth", "AbsRel", 0.2, 0.5, "mean", higher_is_better=False).beats_baseline
    assert not TaskScore("depth", "AbsRel", 0.6, 0.5, "mean", higher_is_better=False).beats_baseline
    assert not TaskScore("pose", "AP", math.nan, 0.0, "empty").beats_baseline
    assert TaskScore("pose", "AP", 3.0, math.nan, "empty").beats_baseline


class _Collector(HTMLParser):
    def __init__(self):
        super().__init__()
        self.images = []
        self.rows = 0

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.images.append(dict(attrs)["src"])
        if tag == "tr":
            self.rows += 1


def test_report_files_list_every_task_with_relative_images(tmp_path):
    curve = plot_loss_curves(
        {"semantic": [(0, 2.0), (10, 1.0)], "depth": [(0, 1.0), (10, float("nan"))]},
        tmp_path / "plots" / "loss.png",
    )
    overlay = tmp_path / "overlays" / "f0.png"
    overlay.parent.mkdir()
    overlay.write_bytes(curve.read_bytes())
    report = DemoReport(
        title="demo",
        summary="s",
        dataset_card="sets: {}",
        recipe="stages: []",
        scores=[
            TaskScore("semantic", "mIoU", 40.0, 10.0, "majority"),
            TaskScore("depth", "AbsRel", 0.9, 0.5, "mean", False),
        ],
        metrics={"semantic": {"mIoU": 40.0, "pAcc": 80.0}},
        loss_curves=curve,
        overlays=[overlay],
        timings={"train": 12.0},
    )
    md, page = write_report(report, tmp_path)
    text = md.read_text()
    assert "| semantic | mIoU ↑ | 40 | 10 | majority | yes |" in text
    assert "| depth | AbsRel ↓ | 0.9 | 0.5 | mean | **no** |" in text
    assert "![loss curves](plots/loss.png)" in text and "(overlays/f0.png)" in text
    parser = _Collector()
    parser.feed(page.read_text())
    assert parser.images == ["plots/loss.png", "overlays/f0.png"]
    assert parser.rows == 3
    assert curve.stat().st_size > 1000 and curve.read_bytes()[:4] == b"\x89PNG"


def test_report_shows_the_video_part_after_the_overlays(tmp_path):
    clip, strip, flow = (tmp_path / "video" / "clip.gif", tmp_path / "video" / "strip.png",
                         tmp_path / "flow" / "f0.png")  # fmt: skip
    report = DemoReport(
        title="demo", summary="s", dataset_card="sets: {}", recipe="stages: []",
        scores=[TaskScore("mot", "HOTA", 30.0, 12.0, "a new id per detection")],
        overlays=[tmp_path / "overlays" / "f0.png"], clip=clip, clip_strip=strip,
        flow_pictures=[flow],
    )  # fmt: skip
    md, page = write_report(report, tmp_path)
    text = md.read_text()
    assert "| mot | HOTA ↑ | 30 | 12 | a new id per detection | yes |" in text
    assert text.index("## Video tasks on a held-out clip") > text.index("(overlays/f0.png)")
    assert "(video/clip.gif)" in text and "(video/strip.png)" in text and "(flow/f0.png)" in text
    parser = _Collector()
    parser.feed(page.read_text())
    assert parser.images == ["overlays/f0.png", "video/clip.gif", "video/strip.png", "flow/f0.png"]
