"""matplotlib-Agg stroke emulation: hand-computed clipping, snapping, curves, joins and pixels.

(The pixel-exact comparison with the official to_mask output is in test_lane_json.py; the one
for polylines matplotlib simplifies, of 128 or more vertices, is here.)
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from drivemtl.evaluation import lane_raster
from drivemtl.evaluation.lane_raster import (
    STROKE_WIDTH,
    bezier_points,
    clip_line_segment,
    lit_pixels,
    paint_stroke,
    poly_paths,
    should_simplify,
    simplify_commands,
    stroke_outline,
)
from drivemtl.evaluation.lane_raster import _polygon_cells as polygon_cells

HALF = STROKE_WIDTH / 2
DENSE = Path(__file__).parent / "data" / "lane_json"


def _draw(vertices: list, types: str, size: tuple[int, int]) -> np.ndarray:
    canvas = np.zeros(size, np.int32)
    paint_stroke(canvas, poly_paths(vertices, types, size), 1)
    return canvas > 0


def test_clip_line_segment_hand_cases() -> None:
    box = (-1.0, -1.0, 11.0, 11.0)
    a, b = np.array([5.0, 5.0]), np.array([5.0, 25.0])
    start, end, moved = clip_line_segment(a, b, box)
    assert start.tolist() == [5.0, 5.0] and end.tolist() == [5.0, 11.0] and not moved
    start, end, moved = clip_line_segment(np.array([-9.0, 1.0]), np.array([11.0, 6.0]), box)
    assert start.tolist() == [-1.0, 3.0] and end.tolist() == [11.0, 6.0] and moved
    assert clip_line_segment(np.array([-5.0, 0.0]), np.array([-2.0, 9.0]), box) is None


def test_snapping_and_clipping_split_paths() -> None:
    # vertices go to pixel centres; the part beyond the grown canvas is cut, and a segment
    # coming back in starts a new sub-path at its clipped entry point
    paths = poly_paths([[2.4, 3.6], [7.5, 3.2], [7.5, 40.0], [3.0, 5.0]], "LLLL", (10, 10))
    assert [p.tolist() for p in paths] == [
        [[2.5, 4.5], [8.5, 3.5], [8.5, 11.5]],
        [[4.5, 11.5], [3.5, 5.5]],  # re-enters y = 11 at x = 7.5 - 4.5 * 29 / 35 = 3.77
    ]


def test_bezier_flattening_stays_on_the_curve() -> None:
    p = [np.array(v, float) for v in ([0.5, 0.5], [40.5, 0.5], [40.5, 40.5], [80.5, 40.5])]
    points = np.array(bezier_points(*p))
    assert points[-1].tolist() == [80.5, 40.5]
    t = np.linspace(0, 1, 2001)[:, None]
    curve = (1 - t) ** 3 * p[0] + 3 * (1 - t) ** 2 * t * p[1] + 3 * (1 - t) * t**2 * p[2]
    curve = curve + t**3 * p[3]
    distance = np.min(np.hypot(*(points[:, None, :] - curve[None]).transpose(2, 0, 1)), axis=1)
    assert distance.max() < 0.1  # Agg adds control-polygon midpoints: close to the curve
    chords = np.r_[[p[0]], points]
    mid = (chords[1:] + chords[:-1]) / 2
    sag = np.min(np.hypot(*(mid[:, None, :] - curve[None]).transpose(2, 0, 1)), axis=1)
    assert sag.max() < 0.5 and len(points) > 4  # chords within Agg's 0.5 px tolerance
    straight = bezier_points(p[0], np.array([10.5, 0.5]), np.array([20.5, 0.5]), p[1])
    assert [q.tolist() for q in straight] == [[40.5, 0.5]]  # controls on the chord: one line


def test_curves_are_never_clipped_and_a_short_one_ends_at_the_origin() -> None:
    # 'C' takes the next two vertices whatever their type; the off-canvas end stays
    (path,) = poly_paths([[2.0, 2.0], [8.0, 2.0], [30.0, 9.0], [30.0, 30.0]], "LCCL", (10, 10))
    assert path[0].tolist() == [2.5, 2.5] and path[-1].tolist() == [30.5, 30.5]
    # a curve cut short reads (0, 0) for its missing vertices (snapped to the pixel centre)
    (short,) = poly_paths([[50.0, 100.0], [150.0, 60.0]], "LC", (180, 320))
    assert short[0].tolist() == [50.5, 100.5] and short[-1].tolist() == [0.5, 0.5]


def test_outline_caps_and_joins() -> None:
    rect = stroke_outline(np.array([[0.5, 0.5], [10.5, 0.5]]))
    assert rect == pytest.approx(
        np.array([[0.5, 0.5 + HALF], [0.5, 0.5 - HALF], [10.5, 0.5 - HALF], [10.5, 0.5 + HALF]])
    )
    # a right angle needs a miter of sqrt(2) widths > matplotlib's limit (1.389): bevel, i.e. the
    # outer side keeps both offset corners; the inner side meets at the offset lines' crossing
    corner = stroke_outline(np.array([[0.5, 0.5], [10.5, 0.5], [10.5, 10.5]]))
    outer = [[10.5, 0.5 - HALF], [10.5 + HALF, 0.5]]
    inner = [10.5 - HALF, 0.5 + HALF]
    assert corner[2:4] == pytest.approx(np.array(outer))
    assert corner[-1] == pytest.approx(np.array(inner))
    # a shallow turn (about 11 degrees) keeps its miter: one point on the outer side
    shallow = stroke_outline(np.array([[0.5, 0.5], [10.5, 0.5], [20.5, 2.5]]))
    assert len(shallow) == 6


def test_pixels_of_simple_strokes() -> None:
    # horizontal: centre row 10.5, width 1.389 -> rows 9..11 (y 9.81..11.19); butt caps at the
    # pixel centres x = 10.5 and 20.5 -> columns 10..20 (each end pixel half covered)
    horizontal = _draw([[10.2, 10.3], [20.4, 10.3]], "LL", (30, 30))
    expected = np.zeros((30, 30), bool)
    expected[9:12, 10:21] = True
    np.testing.assert_array_equal(horizontal, expected)
    np.testing.assert_array_equal(_draw([[10.3, 10.2], [10.3, 20.4]], "LL", (30, 30)), expected.T)
    assert not _draw([[3.2, 3.4], [3.4, 3.2]], "LL", (8, 8)).any()  # snaps to one point
    assert not _draw([[-30, 5], [-3, 5]], "LL", (8, 8)).any()  # all outside


def test_coverage_rule_of_the_binary_rasteriser() -> None:
    # a 0.5 x 0.5 px square inside pixel (2, 4) lights exactly that pixel, either orientation
    square = np.array([[2.25, 4.25], [2.75, 4.25], [2.75, 4.75], [2.25, 4.75]])
    for polygon in (square, square[::-1]):
        cells: list = []
        polygon_cells(polygon, (8.0, 8.0), cells)
        xs, ys = lit_pixels(cells, (8, 8))
        assert list(zip(xs.tolist(), ys.tolist(), strict=True)) == [(2, 4)]
    # a square beyond the canvas' right border is folded onto the border (x = 8): nothing inside
    cells = []
    polygon_cells(np.add(square, [7.0, 0.0]), (8.0, 8.0), cells)
    assert lit_pixels(cells, (8, 8))[0].tolist() == []


def _simplified(points: list, codes: str) -> list:
    out = simplify_commands([(c, np.array(p, float)) for c, p in zip(codes, points, strict=True)])
    return [(c, p.tolist()) for c, p in out]


def test_simplifier_hand_cases() -> None:
    # 0.1 px off the line of the first vector (0, 0) -> (10, 0): under 1/9 px, merged into one line
    # to the farthest point; the turn to (30, 5) is drawn; the path ends at its last vertex twice
    merged = _simplified([[0, 0], [10, 0], [20, 0.1], [30, 5]], "MLLL")
    assert merged == [("M", [0, 0]), ("L", [20, 0.1]), ("L", [30, 5]), ("L", [30, 5])]
    # 0.12 px off: over the threshold, nothing merged
    kept = _simplified([[0, 0], [10, 0], [20, 0.12], [30, 5]], "MLLL")
    assert kept == [
        ("M", [0, 0]),
        ("L", [10, 0]),
        ("L", [20, 0.12]),
        ("L", [30, 5]),
        ("L", [30, 5]),
    ]
    # a run that ends short of its farthest point draws the farthest, then goes back
    points = [[0.5, 0.5], [10.5, 0.5], [20.5, 0.5], [15.5, 0.5], [15.5, 10.5]]
    short = [p for _, p in _simplified(points, "MLLLL")]
    assert short == [[0.5, 0.5], [20.5, 0.5], [15.5, 0.5], [15.5, 10.5], [15.5, 10.5]]
    # doubling back on the line (anti-parallel): forward and backward extremes both drawn
    back = [p for _, p in _simplified([[0.5, 0.5], [10.5, 0.5], [-5.5, 0.5]], "MLL")]
    assert back == [[0.5, 0.5], [10.5, 0.5], [-5.5, 0.5], [-5.5, 0.5]]
    # a MOVETO (re-entry after clipping) closes the run and starts a new sub-path
    moved = _simplified([[0, 0], [10, 0], [20, 0], [50, 50], [60, 50]], "MLLML")
    assert [c for c, _ in moved] == ["M", "L", "M", "L", "L"]
    assert [p for _, p in moved] == [[0, 0], [20, 0], [50, 50], [60, 50], [60, 50]]


def test_should_simplify_follows_matplotlib() -> None:
    # Path.should_simplify: >= 128 vertices, codes only MOVETO / LINETO (the first is a MOVETO)
    assert not should_simplify("L" * 127)
    assert should_simplify("L" * 128) and should_simplify("C" + "L" * 127)
    assert not should_simplify("L" * 100 + "CCC" + "L" * 100)


def _dense_differences(frames: list) -> list[int]:
    """Pixels where our strokes of each dense frame differ from the official to_mask mask."""
    out = []
    for frame in frames:
        png = DENSE / "masks" / "dense_gt" / frame["name"].replace(".jpg", ".png")
        official = cv2.imread(str(png), cv2.IMREAD_UNCHANGED) != 255
        canvas = np.zeros(official.shape, np.int32)
        for label in frame["labels"]:
            for poly in label["poly2d"]:
                paths = poly_paths(poly["vertices"], poly["types"], official.shape)
                paint_stroke(canvas, paths, 1)
        out.append(int(((canvas > 0) != official).sum()))
    return out


def test_dense_polylines_equal_official_to_mask(monkeypatch: pytest.MonkeyPatch) -> None:
    # 16 lanes of 127-400 vertices (benchmarks/official_lane_json.py --dense), 720 x 1280: the
    # official masks (matplotlib 3.11 Agg) are matched pixel for pixel ...
    frames = json.loads((DENSE / "dense_gt.json").read_text(encoding="utf-8"))
    assert sum(len(p["types"]) >= 128 for f in frames for lab in f["labels"] for p in lab["poly2d"])
    assert _dense_differences(frames) == [0, 0, 0, 0]
    # ... and would not be without the simplification (the data exercise it)
    monkeypatch.setattr(lane_raster, "should_simplify", lambda types: False)
    assert sum(_dense_differences(frames)) > 20
