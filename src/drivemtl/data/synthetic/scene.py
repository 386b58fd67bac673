"""Procedural generation of one synthetic driving scene (a short video world).

A `World` holds every box part with its world pose at every frame, the camera poses, the road
and the appearance parameters (weather / scene / time of day). Everything is drawn from one
`numpy.random.Generator`, so a seed fixes the world exactly.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from drivemtl.data.synthetic.camera import Camera, invert_rigid, pitch_matrix, rigid, yaw_matrix
from drivemtl.data.synthetic.materials import Palette
from drivemtl.data.synthetic.objects import (
    PartSpec,
    box,
    limb_boxes,
    person_joints,
    person_materials,
    sign_parts,
    standing,
    traffic_light_parts,
    tree_parts,
    vehicle_parts,
)
from drivemtl.data.synthetic.road import LANE, SEM, Marking, Road

FPS = 5.0
SCENES = ("city street", "highway", "residential", "tunnel", "parking lot", "gas stations")
WEATHERS = ("clear", "overcast", "partly cloudy", "rainy", "snowy", "foggy")
TIMES = ("daytime", "dawn/dusk", "night")
CROSSWALK_CHANCE = {"city street": 0.6, "residential": 0.3}  # scenes with a zebra crossing ahead


@dataclass
class SceneObject:
    """An object made of parts[start:stop]; things carry a category and a track id (>= 1)."""

    category: str | None
    track_id: int
    start: int
    stop: int
    joints: np.ndarray | None = None  # [T, 18, 3] world coordinates (people only)


@dataclass
class World:
    """A generated scene over `num_frames` frames (camera poses world -> camera per frame)."""

    camera: Camera
    road: Road
    tags: dict[str, str]
    palette: Palette
    part_size: np.ndarray  # [P, 3]
    part_semantic: np.ndarray  # [P]
    part_material: np.ndarray  # [P]
    part_object: np.ndarray  # [P]
    part_pose: np.ndarray  # [T, P, 4, 4] object part -> world
    world_to_camera: np.ndarray  # [T, 4, 4]
    objects: list[SceneObject]
    seed_state: int

    @property
    def part_static(self) -> np.ndarray:
        """[P] bool: parts whose pose never changes (their texture can use world coordinates)."""
        return (
            (np.abs(self.part_pose - self.part_pose[:1]).max(axis=(0, 2, 3)) == 0)
            if len(self.part_size)
            else np.zeros(0, bool)
        )

    @property
    def num_frames(self) -> int:
        """Frames in this world (including the look-ahead frame used for flow)."""
        return int(self.world_to_camera.shape[0])


@dataclass
class _Builder:
    rng: np.random.Generator
    num_frames: int
    road: Road
    palette: Palette
    sizes: list[tuple[float, float, float]] = field(default_factory=list)
    semantics: list[int] = field(default_factory=list)
    materials: list[int] = field(default_factory=list)
    owners: list[int] = field(default_factory=list)
    poses: list[np.ndarray] = field(default_factory=list)  # each [T, 4, 4]
    objects: list[SceneObject] = field(default_factory=list)
    next_track: int = 1

    def road_pose(
        self, s: np.ndarray, d: np.ndarray, yaw_offset: np.ndarray | float = 0.0
    ) -> np.ndarray:
        """[T, 4, 4] ground poses at road coordinates (s, d) per frame, facing along the road."""
        s = np.broadcast_to(np.asarray(s, float), (self.num_frames,))
        d = np.broadcast_to(np.asarray(d, float), (self.num_frames,))
        yaw_offset = np.broadcast_to(np.asarray(yaw_offset, float), (self.num_frames,))
        x, z = self.road.to_world(s, d)
        yaw = self.road.heading(s) + yaw_offset
        out = np.zeros((self.num_frames, 4, 4))
        for t in range(self.num_frames):
            out[t] = rigid(yaw_matrix(yaw[t]), np.array([x[t], 0.0, z[t]]))
        return out

    def add(
        self, parts: list[PartSpec], pose: np.ndarray, category: str | None = None
    ) -> SceneObject:
        """Add an object whose parts are fixed in its frame; `pose` is [T, 4, 4] or [4, 4]."""
        if pose.ndim == 2:
            pose = np.broadcast_to(pose, (self.num_frames, 4, 4))
        start = len(self.sizes)
        index = len(self.objects)
        for part in parts:
            self.sizes.append(part.size)
            self.semantics.append(part.semantic)
            self.materials.append(part.material)
            self.owners.append(index)
            self.poses.append(pose @ part.local)
        track = 0
        if category is not None:
            track = self.next_track
            self.next_track += 1
        obj = SceneObject(category, track, start, len(self.sizes))
        self.objects.append(obj)
        return obj

    def add_person(
        self, pose: np.ndarray, category: str, phase0: float, cadence: float, riding: bool
    ) -> SceneObject:
        """Add an articulated pedestrian / rider moving with `pose` [T, 4, 4]."""
        height = float(self.rng.uniform(1.55, 1.92))
        mats = person_materials(self.rng, self.palette)
        sem = SEM["person"] if category == "pedestrian" else SEM["rider"]
        joints_world = np.zeros((self.num_frames, 18, 3))
        limb_poses = []
        for t in range(self.num_frames):
            joints = person_joints(height, phase0 + cadence * t / FPS, riding)
            joints_world[t] = joints @ pose[t, :3, :3].T + pose[t, :3, 3]
            limb_poses.append(limb_boxes(joints, height))
        start = len(self.sizes)
        index = len(self.objects)
        for i, (_, size) in enumerate(limb_poses[0]):
            self.sizes.append(size)
            self.semantics.append(sem)
            self.materials.append(mats[i])
            self.owners.append(index)
            self.poses.append(
                np.stack([pose[t] @ limb_poses[t][i][0] for t in range(self.num_frames)])
            )
        obj = SceneObject(category, self.next_track, start, len(self.sizes), joints_world)
        self.next_track += 1
        self.objects.append(obj)
        return obj


def _tags(rng: np.random.Generator, overrides: dict[str, str | None]) -> dict[str, str]:
    scene = SCENES[rng.integers(len(SCENES))]
    weather = WEATHERS[rng.integers(len(WEATHERS))]
    time = TIMES[rng.choice(3, p=[0.5, 0.2, 0.3])]
    tags = {"weather": weather, "scene": scene, "timeofday": time}
    for key, known in (("scene", SCENES), ("weather", WEATHERS), ("timeofday", TIMES)):
        value = overrides.get(key)
        if value is not None:
            if value not in known:
                raise ValueError(f"unknown {key} {value!r}; known: {', '.join(known)}")
            tags[key] = value
    return tags


def _ground_materials(pal: Palette, tags: dict[str, str]) -> dict[str, int]:
    snowy = tags["weather"] == "snowy"
    wet = tags["weather"] == "rainy"
    asphalt = (70, 70, 74) if not wet else (48, 48, 52)
    if snowy:
        asphalt = (105, 105, 110)
    return {
        "asphalt": pal.add(asphalt, noise=0.18),
        "sidewalk": pal.add(
            (225, 225, 230) if snowy else (150, 145, 140), noise=0.1, stripes=0.08, cell=0.5
        ),
        "terrain": pal.add((235, 238, 242) if snowy else (95, 125, 55), noise=0.3, cell=0.4),
        "curb": pal.add((175, 175, 170), noise=0.08),
        "paint_white": pal.add((230, 230, 225), noise=0.05),
        "paint_yellow": pal.add((225, 180, 40), noise=0.05),
        "paint_other": pal.add((90, 150, 215), noise=0.05),
    }


def _make_road(rng: np.random.Generator, scene: str, mats: dict[str, int]) -> Road:
    curvature = (
        0.0 if rng.random() < 0.4 else float(rng.choice([-1, 1]) * rng.uniform(1 / 400, 1 / 120))
    )
    if scene == "highway":
        n, w, oncoming, side, curbs, outer = (
            int(rng.integers(3, 6)),
            3.6,
            0,
            (0.0, 0.0),
            (False, False),
            SEM["terrain"],
        )
        curvature *= 0.5
    elif scene == "residential":
        n, w, oncoming, side, curbs, outer = 2, 3.1, 1, (3.0, 3.0), (True, True), SEM["terrain"]
    elif scene == "tunnel":
        n, w, oncoming, side, curbs, outer = (
            int(rng.integers(2, 4)),
            3.5,
            0,
            (0.8, 0.8),
            (True, True),
            SEM["sidewalk"],
        )
    elif scene == "parking lot":
        n, w, oncoming, side, curbs, outer = 2, 3.0, 1, (0.0, 0.0), (False, False), SEM["sidewalk"]
        curvature = 0.0
    elif scene == "gas stations":
        n, w, oncoming, side, curbs, outer = 2, 3.4, 1, (3.0, 0.0), (True, False), SEM["terrain"]
    else:
        n = int(rng.integers(2, 5))
        w, oncoming, side, curbs, outer = 3.3, n // 2, (4.0, 4.0), (True, True), SEM["sidewalk"]
    ego = int(rng.integers(oncoming, n))
    road = Road(curvature, w, n, ego, oncoming, side, curbs, outer, materials=mats)
    # markings at the inner lane boundaries, plus painted edge lines where there is no curb
    for j in range(1, n):
        d = road.d_left + j * w
        if j == oncoming:
            cat = rng.choice(
                [
                    LANE["double yellow"],
                    LANE["double white"],
                    LANE["double other"],
                    LANE["single yellow"],
                ],
                p=[0.55, 0.15, 0.15, 0.15],
            )
            style = 0
        else:
            cat = rng.choice(
                [LANE["single white"], LANE["single other"], LANE["double white"]],
                p=[0.75, 0.12, 0.13],
            )
            style = 1 if cat != LANE["double white"] else 0
        colour = (
            "paint_yellow"
            if "yellow" in _cat_name(cat)
            else "paint_other"
            if "other" in _cat_name(cat)
            else "paint_white"
        )
        road.markings.append(Marking(d, int(cat), style, mats[colour]))
    if not curbs[0]:
        road.markings.append(
            Marking(
                road.d_left + 0.25,
                LANE["single yellow"] if scene == "highway" else LANE["single white"],
                0,
                mats["paint_yellow" if scene == "highway" else "paint_white"],
            )
        )
    if not curbs[1] and scene != "parking lot":
        road.markings.append(
            Marking(road.d_right - 0.25, LANE["single white"], 0, mats["paint_white"])
        )
    if scene == "parking lot":
        road.parking_band = (road.half_width + 0.5, road.half_width + 5.5)
    return road


def _cat_name(index: int) -> str:
    from drivemtl.structures.bdd import LANE_CATEGORIES

    return LANE_CATEGORIES[int(index)]


def generate_world(
    rng: np.random.Generator,
    camera: Camera,
    num_frames: int,
    scene: str | None = None,
    weather: str | None = None,
    timeofday: str | None = None,
    people: float = 1.0,
) -> World:
    """Draw one scene (tags, road, static and moving objects) for `num_frames` frames at 5 fps;
    scene / weather / timeofday are random unless given. `people` scales how many pedestrians a
    scene has and how often a crowded crosswalk lies ahead (1 = the default mix)."""
    if people < 0:
        raise ValueError(f"people must be >= 0, got {people}")
    tags = _tags(rng, {"scene": scene, "weather": weather, "timeofday": timeofday})
    scene = tags["scene"]
    pal = Palette()
    mats = _ground_materials(pal, tags)
    road = _make_road(rng, scene, mats)
    b = _Builder(rng, num_frames, road, pal)
    speed = {
        "highway": 24.0,
        "tunnel": 16.0,
        "city street": 8.0,
        "residential": 6.0,
        "parking lot": 3.0,
        "gas stations": 5.0,
    }[scene] * rng.uniform(0.7, 1.2)
    times = np.arange(num_frames) / FPS
    s_ego = speed * times
    travel = float(s_ego[-1])
    s_lo, s_hi = -15.0, travel + 130.0

    # camera: on the ego path, mount height above the road, slight random pitch
    pitch = rng.uniform(-0.02, 0.03)
    world_to_camera = np.zeros((num_frames, 4, 4))
    xs, zs = road.to_world(s_ego, np.zeros_like(s_ego))
    for t in range(num_frames):
        rot = yaw_matrix(road.heading(s_ego[t])) @ pitch_matrix(pitch)
        world_to_camera[t] = invert_rigid(
            rigid(rot, np.array([xs[t], -camera.mount_height, zs[t]]))
        )

    if rng.random() < min(1.0, CROSSWALK_CHANCE.get(scene, 0.0) * people):
        s0 = travel + rng.uniform(5, 22)  # ahead of the last frame's camera
        road.crosswalk = (s0, s0 + 4.0)
    _static_scenery(b, scene, s_lo, s_hi, tags)
    _traffic(b, scene, speed, travel, s_hi, times)
    _people(b, scene, travel, s_hi, times, people)

    poses = np.stack(b.poses, axis=1) if b.poses else np.zeros((num_frames, 0, 4, 4))
    return World(
        camera=camera, road=road, tags=tags, palette=pal,
        part_size=np.asarray(b.sizes, float).reshape(-1, 3),
        part_semantic=np.asarray(b.semantics, np.int64),
        part_material=np.asarray(b.materials, np.int64),
        part_object=np.asarray(b.owners, np.int64),
        part_pose=poses, world_to_camera=world_to_camera, objects=b.objects,
        seed_state=int(rng.integers(2**31)),
    )  # fmt: skip


def _crossing(b: _Builder, times: np.ndarray, people: float) -> None:
    """A group of pedestrians walking across the road on the crosswalk, in both directions."""
    rng, road = b.rng, b.road
    assert road.crosswalk is not None
    s0, s1 = road.crosswalk
    for _ in range(int(rng.integers(2, 8) * people)):
        s = rng.uniform(s0 + 0.4, s1 - 0.4)
        d = rng.uniform(road.d_left - 1.0, road.d_right + 1.0)
        walk = rng.uniform(0.9, 1.5) * rng.choice([-1.0, 1.0])  # m/s towards +d (right) or -d
        yaw = np.pi / 2 if walk > 0 else -np.pi / 2
        pose = b.road_pose(np.full_like(times, s), d + walk * times, yaw)
        b.add_person(pose, "pedestrian", rng.uniform(0, 6.3), 2 * np.pi * 0.9 * abs(walk), False)


def _along(
    rng: np.random.Generator, s_lo: float, s_hi: float, gap: tuple[float, float]
) -> list[float]:
    out, s = [], s_lo + rng.uniform(0, gap[1])
    while s < s_hi:
        out.append(s)
        s += rng.uniform(*gap)
    return out


def _static_scenery(
    b: _Builder, scene: str, s_lo: float, s_hi: float, tags: dict[str, str]
) -> None:
    rng, road, pal = b.rng, b.road, b.palette
    left_edge = road.d_left - road.sidewalk[0]
    right_edge = road.d_right + road.sidewalk[1]

    def place(
        parts: list[PartSpec], s: float, d: float, category: str | None = None, yaw: float = 0.0
    ) -> None:
        b.add(parts, b.road_pose(np.array(s), np.array(d), yaw)[0], category)

    def building(
        s: float, d: float, length: float, depth: float, height: float, side: float
    ) -> None:
        colour = rng.choice(
            [(160, 150, 140), (120, 80, 70), (190, 180, 160), (90, 95, 105), (200, 200, 205)]
        )
        mat = pal.add(colour, noise=0.06, windows=0.45, cell=0.5)
        place(
            [box((0.0, -height / 2, 0.0), (depth, height, length), SEM["building"], mat)],
            s,
            d + side * depth / 2,
        )

    def light_or_sign(s: float, d: float, yaw: float = 0.0) -> None:
        if rng.random() < 0.5:
            pole, light = traffic_light_parts(pal, rng, rng.uniform(3.2, 4.5))
            place(pole, s, d, yaw=yaw)
            place(light, s, d, "traffic light", yaw=yaw)
        else:
            pole, sign = sign_parts(pal, rng)
            place(pole, s, d, yaw=yaw)
            place(sign, s, d, "traffic sign", yaw=yaw)

    def streetlights(d: float, every: float) -> None:
        mat = pal.add((100, 100, 105), noise=0.04)
        for s in _along(rng, s_lo, s_hi, (every * 0.8, every * 1.2)):
            place([standing((0.18, 7.0, 0.18), 0.0, 0.0, SEM["pole"], mat)], s, d)

    if scene == "city street":
        for side, edge in ((-1.0, left_edge), (1.0, right_edge)):
            s = s_lo
            while s < s_hi:
                length = rng.uniform(8, 25)
                building(
                    s + length / 2,
                    edge,
                    length - 0.3,
                    rng.uniform(10, 20),
                    rng.uniform(9, 40),
                    side,
                )
                s += length
            streetlights(edge - side * 0.6 if side > 0 else edge + 0.6, 28.0)
        for s in _along(rng, s_lo + 10, s_hi, (18, 45)):
            light_or_sign(s, road.d_right + 0.6 if rng.random() < 0.6 else road.d_left - 0.6)
        for s in _along(rng, s_lo, s_hi, (15, 40)):
            place(
                tree_parts(pal, rng), s, right_edge - 1.2 if rng.random() < 0.5 else left_edge + 1.2
            )
    elif scene == "residential":
        for side, edge in ((-1.0, left_edge), (1.0, right_edge)):
            fence_mat = pal.add(
                (150, 120, 90) if rng.random() < 0.5 else (200, 200, 195), noise=0.05, stripes=0.35
            )
            wall_mat = pal.add((170, 160, 150), noise=0.1)
            s = s_lo
            while s < s_hi:
                length = rng.uniform(10, 18)
                setback = rng.uniform(5, 12)
                building(
                    s + length / 2,
                    edge + side * setback,
                    length * 0.7,
                    rng.uniform(8, 12),
                    rng.uniform(5, 9),
                    side,
                )
                kind = rng.random()
                if kind < 0.4:
                    place(
                        [box((0.0, -0.6, 0.0), (0.06, 1.2, length - 1.0), SEM["fence"], fence_mat)],
                        s + length / 2,
                        edge + side * 0.4,
                    )
                elif kind < 0.6:
                    place(
                        [box((0.0, -0.8, 0.0), (0.3, 1.6, length - 1.0), SEM["wall"], wall_mat)],
                        s + length / 2,
                        edge + side * 0.4,
                    )
                if rng.random() < 0.7:
                    place(
                        tree_parts(pal, rng),
                        s + rng.uniform(0, length),
                        edge + side * rng.uniform(1.5, 4),
                    )
                s += length
        for s in _along(rng, s_lo + 10, s_hi, (30, 60)):
            light_or_sign(s, road.d_right + 0.5)
    elif scene == "highway":
        rail = pal.add((160, 160, 165), noise=0.05, stripes=0.2)
        median = pal.add((175, 172, 165), noise=0.1)
        for s in _along(rng, s_lo, s_hi, (12, 12.001)):
            place(
                [box((0.0, -0.55, 0.0), (0.3, 0.5, 12.0), SEM["fence"], rail)],
                s,
                road.d_right + 1.2,
            )
            place(
                [box((0.0, -0.5, 0.0), (0.5, 1.0, 12.0), SEM["wall"], median)], s, road.d_left - 1.0
            )
        streetlights(road.d_left - 1.0, 40.0)
        for s in _along(rng, s_lo, s_hi, (8, 30)):
            place(tree_parts(pal, rng), s, road.d_right + rng.uniform(5, 25))
        for s in _along(rng, s_lo + 20, s_hi, (60, 120)):
            pole, sign = sign_parts(pal, rng, large=True)
            place(pole, s, road.d_right + 3.0)
            place(sign, s, road.d_right + 3.0, "traffic sign")
    elif scene == "tunnel":
        wall = pal.add((150, 140, 120), noise=0.1, stripes=0.1)
        ceiling = pal.add((90, 88, 85), noise=0.1)
        lamp = pal.add((255, 220, 150), noise=0.0, emissive=(255, 220, 150))
        span = road.d_right - road.d_left + 2 * 0.8 + 1.0
        centre = (road.d_left + road.d_right) / 2
        exit_s = s_hi - rng.uniform(20, 60)
        seg = 8.0
        for s in np.arange(s_lo, exit_s, seg):
            place(
                [box((0.0, -3.0, 0.0), (0.5, 6.0, seg), SEM["wall"], wall)], s, road.d_left - 1.05
            )
            place(
                [box((0.0, -3.0, 0.0), (0.5, 6.0, seg), SEM["wall"], wall)], s, road.d_right + 1.05
            )
            place([box((0.0, -6.25, 0.0), (span, 0.5, seg), SEM["building"], ceiling)], s, centre)
            place([box((0.0, -5.95, 0.0), (0.5, 0.1, 1.2), SEM["building"], lamp)], s, centre)
        for s in _along(rng, exit_s, s_hi, (10, 20)):
            place(tree_parts(pal, rng), s, road.d_right + rng.uniform(4, 15))
    elif scene == "parking lot":
        lamp_mat = pal.add((110, 110, 110), noise=0.04)
        for s in _along(rng, s_lo, s_hi, (25, 35)):
            for d in (road.d_left - 6.5, road.d_right + 6.5):
                place([standing((0.2, 8.0, 0.2), 0.0, 0.0, SEM["pole"], lamp_mat)], s, d)
        building(s_hi - 30, 0.0, 60.0, 20.0, rng.uniform(8, 15), 1.0)
        for side in (-1.0, 1.0):
            edge = road.d_right + 7.5 if side > 0 else road.d_left - 7.5
            for s in _along(rng, s_lo, s_hi, (6, 14)):
                place(tree_parts(pal, rng), s, edge + side * rng.uniform(0.5, 3))
    elif scene == "gas stations":
        canopy = pal.add((230, 230, 230), noise=0.04, stripes=0.1)
        pillar = pal.add((200, 40, 40), noise=0.04)
        pump = pal.add((40, 150, 70), noise=0.05)
        s_station = rng.uniform(20, 50)
        d0 = road.d_right + 8.0
        place([box((0.0, -5.3, 0.0), (12.0, 0.8, 16.0), SEM["building"], canopy)], s_station, d0)
        for dx, dz in ((-4.0, -6.0), (4.0, -6.0), (-4.0, 6.0), (4.0, 6.0)):
            place([standing((0.5, 4.9, 0.5), dx, dz, SEM["building"], pillar)], s_station, d0)
        for dz in (-3.0, 3.0):
            place([standing((0.6, 1.7, 1.0), 0.0, dz, SEM["building"], pump)], s_station, d0)
        building(s_station + 20, d0 + 4, 14.0, 8.0, 4.5, 1.0)
        road.apron_right = 25.0  # the forecourt is paved road surface on the right side
        for s in _along(rng, s_lo, s_hi, (10, 25)):
            place(tree_parts(pal, rng), s, left_edge - rng.uniform(1, 6))
        pole, sign = sign_parts(pal, rng)
        place(pole, s_station - 12, road.d_right + 1.0)
        place(sign, s_station - 12, road.d_right + 1.0, "traffic sign")


def _traffic(
    b: _Builder, scene: str, ego_speed: float, travel: float, s_hi: float, times: np.ndarray
) -> None:
    rng, road = b.rng, b.road
    mix = {
        "city street": (["car"] * 6 + ["bus", "truck", "motorcycle"], 10),
        "highway": (["car"] * 5 + ["truck", "truck", "bus", "motorcycle"], 9),
        "residential": (["car"] * 6 + ["truck", "motorcycle"], 4),
        "tunnel": (["car"] * 5 + ["truck", "bus"], 6),
        "parking lot": (["car"], 2),
        "gas stations": (["car"] * 5 + ["truck"], 3),
    }[scene]
    categories, count = mix
    for lane in range(road.num_lanes):
        oncoming = lane < road.oncoming_lanes
        lane_speed = ego_speed * rng.uniform(0.6, 1.3)
        if lane == road.ego_lane:
            lane_speed = ego_speed
        s = -25.0 if lane != road.ego_lane else 12.0
        s += rng.uniform(0, 15)
        placed = 0
        while s < s_hi and placed < count:
            category = str(rng.choice(categories))
            if scene == "city street" and rng.random() < 0.04:
                category = "train"
            parts, length, _ = vehicle_parts(category, rng, b.palette)
            s += length / 2
            cw = road.crosswalk
            if cw is not None and cw[0] - 2.0 < s + length / 2 and s - length / 2 < cw[1] + 2.0:
                s = cw[1] + 2.0 + length / 2  # traffic keeps the crosswalk clear
            d = road.lane_center(lane) + rng.uniform(-0.25, 0.25)
            v = -lane_speed if oncoming else lane_speed
            pose = b.road_pose(s + v * times, np.full_like(times, d), np.pi if oncoming else 0.0)
            b.add(parts, pose, category)
            if category == "motorcycle":
                rider_pose = pose @ rigid(np.eye(3), np.array([0.0, 0.0, -0.2]))
                b.add_person(rider_pose, "rider", rng.uniform(0, 6.3), 0.0, riding=True)
            placed += 1
            s += length / 2 + rng.uniform(6, 30)
    # parked cars
    if scene in ("residential", "city street", "parking lot", "gas stations"):
        spots = {"parking lot": 2.7, "residential": 7.0, "city street": 9.0, "gas stations": 0.0}[
            scene
        ]
        if scene == "parking lot":
            for side in (-1.0, 1.0):
                for s in np.arange(-10.0, s_hi, spots):
                    if rng.random() < 0.6:
                        parts, _, _ = vehicle_parts("car", rng, b.palette)
                        d = road.center + side * (road.half_width + 3.0)
                        b.add(
                            parts,
                            b.road_pose(np.array(s + 1.35), np.array(d), np.pi / 2 * side)[0],
                            "car",
                        )
        elif scene == "gas stations":
            for _ in range(int(rng.integers(1, 4))):
                parts, _, _ = vehicle_parts("car", rng, b.palette)
                b.add(
                    parts,
                    b.road_pose(
                        np.array(rng.uniform(20, 60)), np.array(road.d_right + rng.uniform(5, 11))
                    )[0],
                    "car",
                )
        else:
            for s in np.arange(-10.0, s_hi, spots):
                cw = road.crosswalk
                if rng.random() < 0.35 and not (cw and cw[0] - 4.0 < s < cw[1] + 4.0):
                    category = "car" if rng.random() < 0.9 else "bicycle"
                    parts, _, _ = vehicle_parts(category, rng, b.palette)
                    d = road.d_right + (1.1 if category == "car" else 0.5)
                    b.add(parts, b.road_pose(np.array(s), np.array(d))[0], category)


def _people(
    b: _Builder, scene: str, travel: float, s_hi: float, times: np.ndarray, people: float
) -> None:
    rng, road = b.rng, b.road
    count = {
        "city street": 9,
        "residential": 5,
        "parking lot": 5,
        "gas stations": 3,
        "highway": 0,
        "tunnel": 0,
    }[scene]
    for _ in range(int(rng.integers(count // 2, count + 1) * people)):
        if scene == "parking lot":
            d = rng.uniform(-road.half_width - 6.0, road.half_width + 6.0)
            if abs(d) < road.half_width + 1.5:
                d = np.sign(d + 1e-6) * (road.half_width + 1.6)
            d += road.center
        elif scene == "gas stations":
            d = road.d_right + rng.uniform(4.0, 12.0)
        else:
            side = rng.choice([-1.0, 1.0])
            edge = road.d_right if side > 0 else road.d_left
            width = road.sidewalk[1] if side > 0 else road.sidewalk[0]
            lo = 2.2 if side > 0 else 0.5  # parked cars line the right sidewalk's road edge
            d = edge + side * rng.uniform(lo, max(lo + 0.1, width - 0.9))
        s0 = rng.uniform(travel * 0.3, min(s_hi, travel + 60.0))
        walk = rng.uniform(0.9, 1.6) * rng.choice([-1.0, 1.0])
        if rng.random() < 0.15:
            walk = 0.0
        pose = b.road_pose(s0 + walk * times, np.full_like(times, d), 0.0 if walk >= 0 else np.pi)
        cadence = 2 * np.pi * 0.9 * abs(walk)
        b.add_person(pose, "pedestrian", rng.uniform(0, 6.3), cadence, riding=False)
    if road.crosswalk is not None:
        _crossing(b, times, people)
    # cyclists on the sidewalk edge (bike path)
    if road.sidewalk[1] > 1.5 and scene in ("city street", "residential"):
        for _ in range(int(rng.integers(0, 3))):
            speed = rng.uniform(3.0, 5.5)
            s0 = rng.uniform(0.0, travel + 50.0)
            pose = b.road_pose(
                s0 + speed * times, np.full_like(times, road.d_right + road.sidewalk[1] - 0.45)
            )
            parts, _, _ = vehicle_parts("bicycle", rng, b.palette)
            b.add(parts, pose, "bicycle")
            b.add_person(
                pose @ rigid(np.eye(3), np.array([0.0, 0.0, -0.1])),
                "rider",
                rng.uniform(0, 6.3),
                speed * 1.2,
                riding=True,
            )
