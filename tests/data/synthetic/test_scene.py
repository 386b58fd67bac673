"""Scene generation: crowded crosswalks and the `people` density knob."""

from __future__ import annotations

import numpy as np
import pytest

from drivemtl.data.synthetic.camera import Camera
from drivemtl.data.synthetic.scene import World, generate_world

VEHICLES = {"car", "truck", "bus", "train", "motorcycle"}


def _world(seed: int, people: float = 1.0, scene: str = "city street", frames: int = 3) -> World:
    rng = np.random.default_rng(seed)
    return generate_world(rng, Camera.default(320, 192), frames, scene=scene, people=people)


def _road_positions(world: World, category_filter: set[str]) -> list[np.ndarray]:
    """Per matching object: [T, 2] road coordinates (s, d) of the mean of its parts."""
    out = []
    for obj in world.objects:
        if obj.category not in category_filter:
            continue
        centres = world.part_pose[:, obj.start : obj.stop, :3, 3].mean(axis=1)  # [T, 3]
        s, d = world.road.to_road(centres[:, 0], centres[:, 2])
        out.append(np.stack([s, d], axis=1))
    return out


def _crosswalk_world(people: float) -> World:
    for seed in range(40):
        world = _world(seed, people)
        if world.road.crosswalk is not None:
            return world
    raise AssertionError("no city street with a crosswalk in 40 seeds")


def test_pedestrians_cross_on_the_crosswalk_and_traffic_keeps_it_clear() -> None:
    world = _crosswalk_world(people=3.0)
    road = world.road
    s0, s1 = road.crosswalk
    crossing = [  # pedestrians on the road itself (the others walk along the sidewalks)
        p for p in _road_positions(world, {"pedestrian"}) if road.d_left < p[0, 1] < road.d_right
    ]
    assert len(crossing) >= 2
    for track in crossing:
        assert np.all((s0 < track[:, 0]) & (track[:, 0] < s1))  # on the crosswalk ...
        assert np.allclose(track[:, 0], track[0, 0], atol=0.05)  # ... walking across it
        steps = np.abs(np.diff(track[:, 1]))
        assert np.all(steps > 0.9 / 5 - 1e-6) and np.all(steps < 1.5 / 5 + 1e-6)  # m per frame
    for track in _road_positions(world, VEHICLES):  # vehicle centres, first frame
        s = track[0, 0]
        on_road = road.d_left < track[0, 1] < road.d_right
        assert not (on_road and s0 - 1.0 < s < s1 + 1.0), f"vehicle at s={s:.1f} on the crosswalk"


def test_people_scales_how_many_pedestrians_a_scene_has() -> None:
    def count(people: float) -> int:
        return sum(
            len(_road_positions(_world(seed, people, frames=1), {"pedestrian"}))
            for seed in range(6)
        )

    assert count(0.0) == 0
    assert count(3.0) > 2 * count(1.0) > 0


def test_negative_people_is_refused() -> None:
    with pytest.raises(ValueError, match="people"):
        _world(0, people=-1.0)
