"""Render frames of a `World`: the RGB image and every label, all derived from one z-buffer.

`render_world` yields `SynthFrame`s holding numpy arrays; writers turn them into files.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import cv2
import numpy as np
from scipy import ndimage

from drivemtl.data.png_codecs import encode_lane_byte
from drivemtl.data.synthetic.camera import affine, invert_rigid
from drivemtl.data.synthetic.raster import FIRST_FACE, GROUND, NEAR, SKY, Raster, rasterize
from drivemtl.data.synthetic.road import SEM
from drivemtl.data.synthetic.scene import World
from drivemtl.data.synthetic.shading import make_look, sky_colour, texture, weather_overlay
from drivemtl.structures.bdd import IGNORE_INDEX, THING_CLASSES

THING_INDEX = {name: i for i, name in enumerate(THING_CLASSES)}
MIN_INSTANCE_PIXELS = 6
OCCLUDED_FRACTION = 0.9
LANE_RANGE = (2.0, 70.0)


@dataclass
class ObjectLabel:
    """A visible object: tight box of its visible pixels in pixel-edge coordinates (x2 = last
    column + 1), flags, and for people pose keypoints [18, 3] (x, y, visible), where pixel
    (col, row) spans [col, col + 1) x [row, row + 1)."""

    track_id: int
    category: str
    box: tuple[float, float, float, float]
    area: int
    occluded: bool
    truncated: bool
    keypoints: np.ndarray | None = None


@dataclass
class LaneLabel:
    """A lane marking as a polyline [P, 2] with BDD category / direction / style indices."""

    vertices: np.ndarray
    category: int
    direction: int
    style: int


@dataclass
class SynthFrame:
    """One rendered frame and all of its labels as arrays (see docs/data_format.md)."""

    video: str
    frame_index: int
    tags: dict[str, str]
    image: np.ndarray  # [H, W, 3] uint8 RGB
    semantic: np.ndarray  # [H, W] uint8, 255 ignore
    drivable: np.ndarray  # [H, W] uint8 0 direct, 1 alternative, 2 background
    lanes: np.ndarray  # [H, W] uint8 BDD lane byte (255 background)
    instance_ids: np.ndarray  # [H, W] int32 track id, 0 none
    instance_category: np.ndarray  # [H, W] int8 0-based thing class, -1 none
    depth: np.ndarray  # [H, W] float32 metres, 0 invalid (sky)
    normals: np.ndarray  # [3, H, W] float32 camera frame, 0 invalid
    edges: np.ndarray  # [H, W] uint8 0 / 1
    objects: list[ObjectLabel] = field(default_factory=list)
    lane_lines: list[LaneLabel] = field(default_factory=list)
    flow: np.ndarray | None = None  # [2, H, W] float32 pixels to the next frame
    flow_valid: np.ndarray | None = None  # [H, W] bool

    @property
    def things(self) -> list[ObjectLabel]:
        """Objects of the 8 thing classes (those with instance masks)."""
        return [o for o in self.objects if o.category in THING_INDEX]


def _transform_table(world: World, t: int) -> np.ndarray:
    """[1 + P, 3, 4]: camera(t) -> camera(t+1) motion of the static world (row 0) and each part."""
    w2c0, w2c1 = world.world_to_camera[t], world.world_to_camera[t + 1]
    static = w2c1 @ invert_rigid(w2c0)
    parts = (
        w2c1[None]
        @ world.part_pose[t + 1]
        @ invert_rigid(world.part_pose[t])
        @ invert_rigid(w2c0)[None]
    )
    return np.concatenate([static[None], parts], axis=0)[:, :3, :]


def _edges(semantic: np.ndarray) -> np.ndarray:
    edges = np.zeros(semantic.shape, dtype=np.uint8)
    dx = semantic[:, 1:] != semantic[:, :-1]
    dy = semantic[1:, :] != semantic[:-1, :]
    edges[:, 1:] |= dx
    edges[:, :-1] |= dx
    edges[1:, :] |= dy
    edges[:-1, :] |= dy
    return edges


def _lane_lines(world: World, t: int) -> list[LaneLabel]:
    road, cam = world.road, world.camera
    s_cam = _camera_s(world, t)
    lines: list[tuple[np.ndarray, np.ndarray, int, int, int]] = []
    s = s_cam + np.arange(LANE_RANGE[0], LANE_RANGE[1], 2.0)
    for marking in road.markings:
        lines.append((s, np.full_like(s, marking.d), marking.category, 0, marking.style))
    from drivemtl.data.synthetic.road import CURB_WIDTH, LANE

    for is_curb, edge, inward in (
        (road.curbs[0], road.d_left, 1.0),
        (road.curbs[1], road.d_right, -1.0),
    ):
        if is_curb:
            lines.append(
                (s, np.full_like(s, edge + inward * CURB_WIDTH / 2), LANE["road curb"], 0, 0)
            )
    if road.crosswalk is not None:
        d = np.linspace(road.d_left, road.d_right, 8)
        for s_edge in road.crosswalk:
            lines.append((np.full_like(d, s_edge), d, LANE["crosswalk"], 1, 0))
    out = []
    c2w = world.world_to_camera[t]
    for ss, dd, category, direction, style in lines:
        x, z = road.to_world(ss, dd)
        pts = np.stack([x, np.zeros_like(x), z, np.ones_like(x)], axis=1) @ c2w.T
        front = pts[:, 2] > 1.0
        if front.sum() < 2:
            continue
        uv = cam.project(pts[front, :3]) + 0.5  # pixel-edge coordinates
        inside = (
            (uv[:, 0] >= 0) & (uv[:, 0] <= cam.width) & (uv[:, 1] >= 0) & (uv[:, 1] <= cam.height)
        )
        if inside.sum() < 2:
            continue
        idx = np.flatnonzero(inside)
        out.append(LaneLabel(uv[idx[0] : idx[-1] + 1], int(category), direction, style))
    return out


def _camera_s(world: World, t: int) -> float:
    c2w = invert_rigid(world.world_to_camera[t])
    s, _ = world.road.to_road(np.array([c2w[0, 3]]), np.array([c2w[2, 3]]))
    return float(s[0])


def render_frame(world: World, t: int, raster: Raster, raster_next: Raster | None) -> SynthFrame:
    """All labels and the image of frame t (flow needs the raster of frame t + 1)."""
    cam = world.camera
    h, w = cam.height, cam.width
    px = _Dense(world, t, raster)
    face = raster.face

    # ground map (only ground pixels)
    g = px.ground
    gmap = world.road.classify(
        *world.road.to_road(
            px.wx.ravel()[g].astype(np.float64), px.wz.ravel()[g].astype(np.float64)
        )
    )
    semantic = np.concatenate(
        [[SEM["sky"], SEM["road"]], np.repeat(world.part_semantic, 6)]
    ).astype(np.uint8)[face]
    semantic.ravel()[g] = gmap.semantic
    drivable = np.full((h, w), 2, dtype=np.uint8)
    drivable.ravel()[g] = gmap.drivable
    lanes = np.full((h, w), 255, dtype=np.uint8)
    lanes.ravel()[g] = encode_lane_byte(gmap.lane_category, gmap.lane_direction, gmap.lane_style)

    # objects
    num_obj = len(world.objects)
    obj_map = np.concatenate([[0, 0], np.repeat(world.part_object + 1, 6)]).astype(np.int32)[face]
    areas = np.bincount(obj_map.ravel(), minlength=num_obj + 1)
    slices = ndimage.find_objects(obj_map, max_label=num_obj)
    objects: list[ObjectLabel] = []
    track_of = np.zeros(num_obj + 1, dtype=np.int32)
    cat_of = np.full(num_obj + 1, -1, dtype=np.int8)
    drop = np.zeros(num_obj + 1, dtype=bool)
    for i, obj in enumerate(world.objects):
        if obj.category is None or areas[i + 1] == 0:
            continue
        if areas[i + 1] < MIN_INSTANCE_PIXELS:
            drop[i + 1] = obj.category in THING_INDEX
            continue
        sl = slices[i]
        bbox = (
            float(sl[1].start),
            float(sl[0].start),
            float(sl[1].stop),
            float(sl[0].stop),
        )
        amodal = raster.amodal_area.get(i, int(areas[i + 1]))
        label = ObjectLabel(
            obj.track_id, obj.category, bbox, int(areas[i + 1]),
            occluded=bool(areas[i + 1] < OCCLUDED_FRACTION * amodal),
            truncated=i in raster.truncated,
        )  # fmt: skip
        if obj.joints is not None:
            label.keypoints = _keypoints(world, t, obj.joints[t], obj_map, i + 1)
        if obj.category in THING_INDEX:
            track_of[i + 1] = obj.track_id
            cat_of[i + 1] = THING_INDEX[obj.category]
        objects.append(label)
    if drop.any():
        semantic[drop[obj_map]] = IGNORE_INDEX
    instance_ids = track_of[obj_map]
    instance_category = cat_of[obj_map]

    normal_table = raster.face_normals.astype(np.float32)
    normal_table[SKY] = 0.0
    normals = np.ascontiguousarray(normal_table.T).take(face, axis=1)

    flow = flow_valid = None
    if raster_next is not None:
        flow, flow_valid = _flow(world, t, px, raster_next)

    image = _shade(world, t, raster, px, gmap.material)
    return SynthFrame(
        video="", frame_index=t, tags=dict(world.tags), image=image, semantic=semantic,
        drivable=drivable, lanes=lanes, instance_ids=instance_ids,
        instance_category=instance_category, depth=px.depth, normals=normals,
        edges=_edges(semantic), objects=objects, lane_lines=_lane_lines(world, t), flow=flow,
        flow_valid=flow_valid,
    )  # fmt: skip


class _Dense:
    """Per-pixel geometry of one frame as dense [H, W] arrays: depth (0 on sky), camera-frame
    points (sky pixels hold their unit-depth ray), world points, part index (-1 = sky / ground),
    and flat indices of ground pixels and of pixels on moving parts."""

    def __init__(self, world: World, t: int, raster: Raster):
        cam = world.camera
        face = raster.face
        self.face = face
        self.sky = face == SKY
        d1 = 1.0 / np.where(self.sky, np.float32(1.0), raster.inv_depth)
        self.depth = np.where(self.sky, np.float32(0.0), d1).astype(np.float32)
        self.rx = ((np.arange(cam.width) - cam.cx) / cam.fx).astype(np.float32)[None, :]
        self.ry = ((np.arange(cam.height) - cam.cy) / cam.fy).astype(np.float32)[:, None]
        self.x = self.rx * d1
        self.y = self.ry * d1
        self.z = d1
        self.part = (face - FIRST_FACE) // 6  # -1 on sky and ground
        self.ground = np.flatnonzero(face == GROUND)
        moving = (
            np.concatenate([[False], ~world.part_static])
            if len(world.part_size)
            else np.zeros(1, bool)
        )
        self.moving = np.flatnonzero(moving[self.part + 1])
        self.moving_part = self.part.ravel()[self.moving]
        c2w = invert_rigid(world.world_to_camera[t]).astype(np.float32)
        self.c2w = c2w
        self.wx, self.wy, self.wz = _affine_dense(c2w, self.x, self.y, self.z)


def _affine_dense(
    m: np.ndarray, x: np.ndarray, y: np.ndarray, z: np.ndarray, weight: np.ndarray | float = 1.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Apply a 3x4 (or 4x4) transform to dense coordinate arrays; `weight` scales the translation."""
    return tuple(m[i, 0] * x + m[i, 1] * y + m[i, 2] * z + m[i, 3] * weight for i in range(3))  # type: ignore[return-value]


def _apply_subset(
    table: np.ndarray, index: np.ndarray, coords: tuple[np.ndarray, ...], rows: np.ndarray
) -> list[np.ndarray]:
    """Per-point transforms table[index] ([K, 3, 4]) applied to coords at flat indices `rows`."""
    x, y, z = (c.ravel()[rows] for c in coords)
    # one gather: row 4 * i + j of m is table[index, i, j]
    m = np.ascontiguousarray(table.reshape(len(table), 12).T).take(index, axis=1)
    return [m[4 * i] * x + m[4 * i + 1] * y + m[4 * i + 2] * z + m[4 * i + 3] for i in range(3)]


def _keypoints(
    world: World, t: int, joints: np.ndarray, obj_map: np.ndarray, label: int
) -> np.ndarray:
    cam = world.camera
    pts = joints @ world.world_to_camera[t][:3, :3].T + world.world_to_camera[t][:3, 3]
    out = np.zeros((len(joints), 3), dtype=np.float64)
    front = pts[:, 2] > NEAR
    uv = np.zeros((len(joints), 2))
    uv[front] = cam.project(pts[front]) + 0.5  # pixel-edge coordinates
    col = np.floor(uv[:, 0]).astype(np.int64)
    row = np.floor(uv[:, 1]).astype(np.int64)
    inside = front & (col >= 0) & (col < cam.width) & (row >= 0) & (row < cam.height)
    visible = np.zeros(len(joints), dtype=bool)
    visible[inside] = obj_map[row[inside], col[inside]] == label
    out[:, 0] = np.clip(uv[:, 0], 0, cam.width)
    out[:, 1] = np.clip(uv[:, 1], 0, cam.height)
    out[:, 2] = visible
    return out


def _flow(world: World, t: int, px: _Dense, nxt: Raster) -> tuple[np.ndarray, np.ndarray]:
    cam = world.camera
    h, w = cam.height, cam.width
    table = _transform_table(world, t).astype(np.float32)
    solid = (~px.sky).astype(np.float32)  # sky points are directions: no translation
    mx, my, mz = _affine_dense(table[0], px.x, px.y, px.z, solid)
    if len(px.moving):
        moved = _apply_subset(table, px.moving_part + 1, (px.x, px.y, px.z), px.moving)
        for dst, src in zip((mx, my, mz), moved, strict=True):
            dst.ravel()[px.moving] = src
    front = mz > NEAR
    zs = np.where(front, mz, np.float32(1.0))
    u1 = np.float32(cam.fx) * mx / zs + np.float32(cam.cx)
    v1 = np.float32(cam.fy) * my / zs + np.float32(cam.cy)
    col = np.rint(u1).astype(np.int32)
    row = np.rint(v1).astype(np.int32)
    inside = front & (col >= 0) & (col < w) & (row >= 0) & (row < h)
    row *= w
    row += col
    target = np.where(inside, row, 0)
    next_face = nxt.face.ravel()[target]
    next_sky = next_face == SKY
    next_depth = 1.0 / np.where(next_sky, np.float32(1.0), nxt.inv_depth.ravel()[target])
    depth_ok = np.abs(next_depth - mz) <= 0.03 * mz + 0.05
    # the point must reappear on the same surface owner (object, or ground / static world)
    owner_of = np.concatenate([[-1, -1], np.repeat(world.part_object, 6)]).astype(np.int32)
    same_owner = owner_of[px.face] == owner_of[next_face]
    valid = inside & np.where(px.sky, next_sky, ~next_sky & depth_ok & same_owner)
    cols = np.arange(w, dtype=np.float32)[None, :]
    rows = np.arange(h, dtype=np.float32)[:, None]
    flow = np.empty((2, h, w), dtype=np.float32)
    np.subtract(u1, cols, out=flow[0])
    np.subtract(v1, rows, out=flow[1])
    flow *= valid
    return flow, valid


def _shade(world: World, t: int, raster: Raster, px: _Dense, ground_mat: np.ndarray) -> np.ndarray:
    cam = world.camera
    look = make_look(world.tags)
    table = world.palette.tables()

    # lit base colour per face (boxes) or per ground material, indexed by an appearance id
    world_normals = affine(raster.face_normals, px.c2w.astype(np.float64), translate=False)
    sun = np.clip((world_normals * look.sun).sum(axis=1), 0.0, None)
    shade = (look.ambient + look.diffuse * sun).astype(np.float32)
    face_material = np.concatenate([[0, 0], np.repeat(world.part_material, 6)])
    num_faces = len(face_material)
    rgb = np.concatenate([
        table["rgb"][face_material] * (shade[:, None] * look.gain[None]),
        table["rgb"] * (shade[GROUND] * look.gain[None]),
    ]).astype(np.float32)  # fmt: skip
    appearance = px.face.astype(np.int64)
    appearance.ravel()[px.ground] = num_faces + ground_mat
    mats = np.concatenate([face_material, np.arange(len(table["rgb"]))])[appearance]

    # surface-anchored texture coordinates: world for static surfaces, part frame if moving
    lx, ly, lz = px.wx.copy(), px.wy.copy(), px.wz.copy()
    if len(px.moving):
        to_local = invert_rigid(world.part_pose[t]) @ invert_rigid(world.world_to_camera[t])[None]
        moved = _apply_subset(
            to_local[:, :3, :].astype(np.float32), px.moving_part, (px.x, px.y, px.z), px.moving
        )
        for dst, src in zip((lx, ly, lz), moved, strict=True):
            dst.ravel()[px.moving] = src
    # pixels per metre of surface: f * cos(incidence) / depth, with cos = plane distance / range
    distance = raster.face_distance.astype(np.float32)[px.face]
    inv_norm = cam.inverse_ray_norms().reshape(cam.height, cam.width)
    footprint = np.float32(cam.fx) * distance * inv_norm / (px.z * px.z)
    factor, lit = texture((lx, ly, lz), mats, table, footprint)

    glowing = np.flatnonzero((table["emissive"] > 0).any(axis=1)[mats])
    lit_idx = np.flatnonzero(lit) if look.emissive > 0.5 else np.zeros(0, np.int64)
    fog = clear = None
    if look.fog_distance < 500:
        fog = np.exp(-px.z / np.float32(look.fog_distance))
        clear = 1 - fog
    # the sky colour only matters on sky pixels: evaluate it there (same per-pixel arithmetic)
    sky_idx = np.flatnonzero(px.sky)
    rx = px.rx[0, sky_idx % cam.width]
    ry = px.ry[sky_idx // cam.width, 0]
    up = -(px.c2w[1, 0] * rx + px.c2w[1, 1] * ry + px.c2w[1, 2]) * inv_norm.ravel()[sky_idx]
    azimuth = None
    if look.clouds:
        dx = px.c2w[0, 0] * rx + px.c2w[0, 1] * ry + px.c2w[0, 2]
        dz = px.c2w[2, 0] * rx + px.c2w[2, 1] * ry + px.c2w[2, 2]
        azimuth = np.arctan2(dx, dz)
    brightness = np.float32(1.0 if world.tags["timeofday"] == "night" else look.gain.mean())
    sky = sky_colour(up, azimuth, look)
    channels = []
    for ch in range(3):
        colour = rgb[:, ch][appearance] * factor
        if len(glowing):
            colour.ravel()[glowing] += table["emissive"][mats.ravel()[glowing], ch] * np.float32(
                look.emissive
            )
        if len(lit_idx):
            colour.ravel()[lit_idx] += np.float32((210, 180, 100)[ch] * look.emissive * 0.8)
        if fog is not None and clear is not None:
            colour = colour * fog + look.fog_colour[ch] * clear
        colour.ravel()[sky_idx] = sky[ch] * brightness
        channels.append(colour.astype(np.float32, copy=False))
    image = cv2.merge(channels)
    rng = np.random.default_rng([world.seed_state, t])
    weather_overlay(image, look, rng)
    np.clip(image, 0, 255, out=image)  # clip then round == round then clip (0, 255 integers)
    np.rint(image, out=image)
    return image.astype(np.uint8)


def render_world(
    world: World, video: str = "", frames: int | None = None, flow: bool = True
) -> Iterator[SynthFrame]:
    """Yield the first `frames` frames of `world` (default: all but the look-ahead frame)."""
    count = world.num_frames - 1 if frames is None else frames
    things = {i for i, o in enumerate(world.objects) if o.category is not None}

    def raster_at(t: int) -> Raster:
        return rasterize(
            world.camera,
            world.world_to_camera[t],
            world.part_pose[t],
            world.part_size,
            world.part_object,
            things,
        )

    current = raster_at(0)
    for t in range(count):
        nxt = raster_at(t + 1) if flow and t + 1 < world.num_frames else None
        frame = render_frame(world, t, current, nxt)
        frame.video = video
        yield frame
        if nxt is not None:
            current = nxt
        elif t + 1 < count:
            current = raster_at(t + 1)
