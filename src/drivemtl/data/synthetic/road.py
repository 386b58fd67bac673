"""The road of a synthetic scene: a constant-curvature centreline, lanes, markings and the
analytic ground map (road / sidewalk / terrain, drivable area, lane markings) of any ground point.

Road coordinates (s, d): s is the arc length along the ego path, d the signed offset to its right.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from drivemtl.structures.bdd import LANE_CATEGORIES, SEMANTIC_CLASSES

SEM = {name: i for i, name in enumerate(SEMANTIC_CLASSES)}
LANE = {name: i for i, name in enumerate(LANE_CATEGORIES)}
DASH_PERIOD = 9.0
DASH_LENGTH = 3.0
DOUBLE_GAP = 0.12
CURB_WIDTH = 0.3


@dataclass
class Marking:
    """A painted line parallel to the road at offset d: BDD category, style (0 solid / 1 dashed)."""

    d: float
    category: int
    style: int
    material: int
    width: float = 0.15

    @property
    def double(self) -> bool:
        """Whether the category is drawn as two parallel lines."""
        return LANE_CATEGORIES[self.category].startswith("double")


@dataclass
class Road:
    """Lanes between d_left and d_right (lane i spans d_left + [i, i+1] * lane_width)."""

    curvature: float
    lane_width: float
    num_lanes: int
    ego_lane: int
    oncoming_lanes: int
    sidewalk: tuple[float, float]  # widths left / right (0 = none)
    curbs: tuple[bool, bool]
    outer_semantic: int  # what the ground is beyond the sidewalks (terrain or sidewalk)
    markings: list[Marking] = field(default_factory=list)
    crosswalk: tuple[float, float] | None = None  # s range
    parking_band: tuple[float, float] | None = None  # |d - center| range of parking slots
    apron_right: float = 0.0  # paved forecourt beyond the right edge (gas stations)
    materials: dict[str, int] = field(default_factory=dict)

    @property
    def d_left(self) -> float:
        """Offset of the left road edge (the ego path is the centre of the ego lane)."""
        return -(self.ego_lane + 0.5) * self.lane_width

    @property
    def d_right(self) -> float:
        """Offset of the right road edge."""
        return self.d_left + self.num_lanes * self.lane_width

    @property
    def center(self) -> float:
        """Offset of the middle of the road."""
        return (self.d_left + self.d_right) / 2

    @property
    def half_width(self) -> float:
        """Half the road width (all lanes)."""
        return self.num_lanes * self.lane_width / 2

    def lane_center(self, lane: int) -> float:
        """Offset of the centre of lane `lane`."""
        return self.d_left + (lane + 0.5) * self.lane_width

    # --- geometry of the centreline -------------------------------------------------------
    def to_world(self, s: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Road coordinates -> world (x, z) on the ground."""
        s, d = np.asarray(s, dtype=np.float64), np.asarray(d, dtype=np.float64)
        k = self.curvature
        if abs(k) < 1e-9:
            return d + 0.0 * s, s + 0.0 * d
        theta = k * s
        x = (1.0 - np.cos(theta)) / k + d * np.cos(theta)
        z = np.sin(theta) / k - d * np.sin(theta)
        return x, z

    def heading(self, s: np.ndarray) -> np.ndarray:
        """Yaw of the road direction at arc length s."""
        return self.curvature * np.asarray(s, dtype=np.float64)

    def to_road(self, x: np.ndarray, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """World ground (x, z) -> road coordinates (s, d)."""
        k = self.curvature
        if abs(k) < 1e-9:
            return z, x
        radius = 1.0 / k
        sign = np.sign(k)
        r = np.hypot(x - radius, z)
        d = sign * (abs(radius) - r)
        s = np.arctan2(z, sign * (radius - x)) / abs(k)
        return s, d

    # --- ground map -----------------------------------------------------------------------
    def classify(self, s: np.ndarray, d: np.ndarray) -> GroundMap:
        """Semantic class, material, drivable value and lane marking of ground points (s, d)."""
        mat = self.materials
        n = s.shape
        semantic = np.full(n, self.outer_semantic, dtype=np.uint8)
        material = np.full(
            n,
            mat["terrain"] if self.outer_semantic == SEM["terrain"] else mat["sidewalk"],
            dtype=np.int32,
        )
        drivable = np.full(n, 2, dtype=np.uint8)
        lane_cat = np.full(n, -1, dtype=np.int8)
        lane_dir = np.zeros(n, dtype=np.uint8)
        lane_style = np.zeros(n, dtype=np.uint8)

        left, right = self.sidewalk
        side = ((d < self.d_left) & (d >= self.d_left - left)) | (
            (d > self.d_right) & (d <= self.d_right + right)
        )
        semantic[side] = SEM["sidewalk"]
        material[side] = mat["sidewalk"]

        on_road = (d >= self.d_left) & (d <= self.d_right)
        if self.parking_band is not None:
            on_road |= np.abs(d - self.center) <= self.parking_band[1] + 1.0
        if self.apron_right > 0:
            on_road |= (d > self.d_right) & (d <= self.d_right + self.apron_right)
        semantic[on_road] = SEM["road"]
        material[on_road] = mat["asphalt"]
        lane = np.floor((d - self.d_left) / self.lane_width).astype(np.int64)
        in_lanes = (d >= self.d_left) & (d <= self.d_right)
        direct = in_lanes & (lane == self.ego_lane)
        same_way = in_lanes & (lane >= self.oncoming_lanes) & ~direct
        drivable[same_way] = 1
        if self.parking_band is not None or self.apron_right > 0:
            drivable[on_road & ~direct & ~in_lanes] = 1
        drivable[direct] = 0

        def paint(hit: np.ndarray, category: int, style: int, direction: int, material_id: int):
            hit = hit & on_road
            lane_cat[hit] = category
            lane_style[hit] = style
            lane_dir[hit] = direction
            material[hit] = material_id

        phase = np.mod(s, DASH_PERIOD) < DASH_LENGTH
        for marking in self.markings:
            offset = np.abs(d - marking.d)
            if marking.double:
                hit = np.abs(offset - DOUBLE_GAP) < marking.width / 2
            else:
                hit = offset < marking.width / 2
            if marking.style == 1:
                hit &= phase
            paint(hit, marking.category, marking.style, 0, marking.material)
        for is_curb, edge, inward in (
            (self.curbs[0], self.d_left, 1.0),
            (self.curbs[1], self.d_right, -1.0),
        ):
            if is_curb:
                band = (d - edge) * inward
                paint((band >= 0) & (band < CURB_WIDTH), LANE["road curb"], 0, 0, mat["curb"])
        if self.crosswalk is not None:
            s0, s1 = self.crosswalk
            hit = (s >= s0) & (s <= s1) & (np.mod(d - self.d_left, 1.0) < 0.5) & in_lanes
            paint(hit, LANE["crosswalk"], 0, 1, mat["paint_white"])
        if self.parking_band is not None:
            d0, d1 = self.parking_band
            off = np.abs(d - self.center)
            hit = (off >= d0) & (off <= d1) & (np.mod(s, 2.7) < 0.12)
            paint(hit, LANE["single white"], 0, 1, mat["paint_white"])
        return GroundMap(semantic, material, drivable, lane_cat, lane_dir, lane_style)


@dataclass
class GroundMap:
    """Per-point ground labels from `Road.classify` (lane_category -1 = no marking)."""

    semantic: np.ndarray
    material: np.ndarray
    drivable: np.ndarray
    lane_category: np.ndarray
    lane_direction: np.ndarray
    lane_style: np.ndarray
