"""Road geometry and the analytic ground map."""

from __future__ import annotations

import numpy as np
import pytest

from drivemtl.data.synthetic.road import LANE, SEM, Marking, Road

MATS = {k: i for i, k in enumerate(
    ("asphalt", "sidewalk", "terrain", "curb", "paint_white", "paint_yellow", "paint_other"))}  # fmt: skip


def _road(curvature: float = 0.0) -> Road:
    road = Road(curvature, 3.5, 3, 1, 1, (3.0, 3.0), (True, True), SEM["terrain"], materials=MATS)
    road.markings.append(Marking(road.d_left + 3.5, LANE["double yellow"], 0, MATS["paint_yellow"]))
    road.markings.append(Marking(road.d_left + 7.0, LANE["single white"], 1, MATS["paint_white"]))
    return road


@pytest.mark.parametrize("curvature", [0.0, 1 / 150, -1 / 90])
def test_road_coordinates_round_trip(curvature):
    road = _road(curvature)
    s = np.array([0.0, 5.0, 40.0, 120.0])
    d = np.array([0.0, -4.0, 2.5, 10.0])
    x, z = road.to_world(s, d)
    s2, d2 = road.to_road(x, z)
    np.testing.assert_allclose(s2, s, atol=1e-9)
    np.testing.assert_allclose(d2, d, atol=1e-9)
    # the offset is perpendicular to the heading
    dx, dz = np.cos(road.heading(s)), -np.sin(road.heading(s))
    x0, z0 = road.to_world(s, np.zeros_like(s))
    np.testing.assert_allclose((x - x0) * dx + (z - z0) * dz, d, atol=1e-9)


def test_ground_map_classes():
    road = _road()
    # ego lane centre, oncoming lane, same-way lane, curb, sidewalk, terrain, dashed gap / dash
    d = np.array([0.0, -3.5, 3.5, road.d_left + 0.1, road.d_right + 1.0, road.d_right + 5.0,
                  road.d_left + 7.0, road.d_left + 7.0, road.d_left + 3.5 + 0.12])  # fmt: skip
    s = np.array([1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 5.0, 1.0, 30.0])
    g = road.classify(s, d)
    np.testing.assert_array_equal(
        g.semantic, [SEM["road"]] * 4 + [SEM["sidewalk"], SEM["terrain"]] + [SEM["road"]] * 3
    )
    np.testing.assert_array_equal(g.drivable, [0, 2, 1, 2, 2, 2, 1, 1, 0])
    expected = [
        -1,
        -1,
        -1,
        LANE["road curb"],
        -1,
        -1,
        -1,
        LANE["single white"],
        LANE["double yellow"],
    ]
    np.testing.assert_array_equal(g.lane_category, expected)
    assert g.lane_style[7] == 1 and g.lane_style[8] == 0
