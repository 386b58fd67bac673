"""Render frames of a `World`: the RGB image and every label, all derived from one z-buffer.

`render_world` yields `SynthFrame`s holding numpy arrays; writers turn them into files.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from drivemtl.data.png_codecs import encode_lane_byte
from drivemtl.data.synthetic.camera import Camera, affine, invert_rigid
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


def _apply(
    table: np.ndarray, index: np.ndarray, points: np.ndarray, translate: bool = True
) -> np.ndarray:
    """Apply per-point transforms table[index] ([N] into [K, 3, 4]) to points [N, 3]."""
    out = np.empty_like(points)
    for i in range(3):
        acc = table[:, i, 0][index] * points[:, 0] + table[:, i, 1][index] * points[:, 1]
        acc += table[:, i, 2][index] * points[:, 2]
        if translate:
            acc += table[:, i, 3][index]
        out[:, i] = acc
    return out


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
    face = raster.face.ravel()
    rays = cam.rays().reshape(-1, 3).astype(np.float32)
    px = _Pixels(face, raster.inv_depth.ravel(), rays, world.part_static)
    c2w = invert_rigid(world.world_to_camera[t])
    world_pts = affine(px.points, c2w)

    # ground map
    g = px.ground_rows
    gs, gd = world.road.to_road(
        world_pts[g, 0].astype(np.float64), world_pts[g, 2].astype(np.float64)
    )
    gmap = world.road.classify(gs, gd)

    n = h * w
    semantic = np.full(n, SEM["sky"], dtype=np.uint8)
    semantic[px.ground] = gmap.semantic
    semantic[px.boxes] = world.part_semantic[px.part]
    drivable = np.full(n, 2, dtype=np.uint8)
    drivable[px.ground] = gmap.drivable
    lanes = np.full(n, 255, dtype=np.uint8)
    lanes[px.ground] = encode_lane_byte(gmap.lane_category, gmap.lane_direction, gmap.lane_style)
    lanes = lanes.reshape(h, w)

    # objects
    num_obj = len(world.objects)
    obj_flat = np.zeros(n, dtype=np.int32)
    obj_flat[px.boxes] = world.part_object[px.part] + 1
    obj_map = obj_flat.reshape(h, w)
    areas = np.bincount(obj_flat, minlength=num_obj + 1)
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
        semantic[drop[obj_flat]] = IGNORE_INDEX
    semantic = semantic.reshape(h, w)
    instance_ids = track_of[obj_map]
    instance_category = cat_of[obj_map]

    normal_table = raster.face_normals.astype(np.float32)
    normal_table[SKY] = 0.0
    normals = np.stack([normal_table[:, i][raster.face] for i in range(3)])
    depth = px.depth.reshape(h, w)

    flow = flow_valid = None
    if raster_next is not None:
        flow, flow_valid = _flow(world, t, px, raster_next)

    image = _shade(world, t, raster, px, world_pts, gmap.material)
    return SynthFrame(
        video="", frame_index=t, tags=dict(world.tags), image=image, semantic=semantic,
        drivable=drivable.reshape(h, w), lanes=lanes, instance_ids=instance_ids,
        instance_category=instance_category, depth=depth,
        normals=normals, edges=_edges(semantic),
        objects=objects, lane_lines=_lane_lines(world, t), flow=flow, flow_valid=flow_valid,
    )  # fmt: skip


class _Pixels:
    """Flat index sets of one frame: sky / ground / box pixels, depth and camera-frame points
    (`points` rows follow `solid`), part of each box pixel and which box pixels move."""

    def __init__(
        self, face: np.ndarray, inv_depth: np.ndarray, rays: np.ndarray, static: np.ndarray
    ):
        self.face = face
        self.rays = rays
        self.sky = np.flatnonzero(face == SKY)
        self.solid = np.flatnonzero(face != SKY)
        solid_face = face[self.solid]
        self.ground_rows = np.flatnonzero(solid_face == GROUND)
        self.box_rows = np.flatnonzero(solid_face >= FIRST_FACE)
        self.ground = self.solid[self.ground_rows]
        self.boxes = self.solid[self.box_rows]
        self.part = (face[self.boxes] - FIRST_FACE) // 6
        self.depth = np.zeros(len(face), dtype=np.float32)
        self.depth[self.solid] = 1.0 / inv_depth[self.solid]
        self.points = rays[self.solid] * self.depth[self.solid, None]
        moving = ~static[self.part] if len(static) else np.zeros(len(self.part), bool)
        self.moving_rows = self.box_rows[moving]
        self.moving_part = self.part[moving]


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


def _flow(world: World, t: int, px: _Pixels, nxt: Raster) -> tuple[np.ndarray, np.ndarray]:
    cam = world.camera
    h, w = cam.height, cam.width
    table = _transform_table(world, t).astype(np.float32)
    static = table[0]
    moved = affine(px.points, static)
    if len(px.moving_rows):
        moved[px.moving_rows] = _apply(table, px.moving_part + 1, px.points[px.moving_rows])
    sky_dirs = affine(px.rays[px.sky], static, translate=False)
    flat = np.zeros((h * w, 3), dtype=np.float32)
    flat[px.solid] = moved
    flat[px.sky] = sky_dirs
    z = flat[:, 2]
    front = z > NEAR
    zs = np.where(front, z, 1.0)
    u1 = cam.fx * flat[:, 0] / zs + np.float32(cam.cx)
    v1 = cam.fy * flat[:, 1] / zs + np.float32(cam.cy)
    u0, v0 = _grid(cam)
    flow = np.stack([u1 - u0, v1 - v0]).astype(np.float32)
    col = np.rint(u1).astype(np.int64)
    row = np.rint(v1).astype(np.int64)
    inside = np.flatnonzero(front & (col >= 0) & (col < w) & (row >= 0) & (row < h))
    target = row[inside] * w + col[inside]
    next_face = nxt.face.ravel()[target]
    next_sky = next_face == SKY
    next_inv = nxt.inv_depth.ravel()[target]
    with np.errstate(divide="ignore"):
        next_depth = 1.0 / np.where(next_sky, 1.0, next_inv)
    zi = z[inside]
    here_sky = px.face[inside] == SKY
    depth_ok = np.abs(next_depth - zi) <= 0.03 * zi + 0.05
    valid = np.zeros(h * w, dtype=bool)
    # the point must reappear on the same surface owner (object, or ground / static world)
    owner_of = np.concatenate([[-1, -1], np.repeat(world.part_object, 6)])
    same_owner = owner_of[px.face[inside]] == owner_of[next_face]
    valid[inside] = np.where(here_sky, next_sky, ~next_sky & depth_ok & same_owner)
    flow[:, ~valid] = 0.0
    return flow.reshape(2, h, w), valid.reshape(h, w)


def _grid(cam: Camera) -> tuple[np.ndarray, np.ndarray]:
    """Flat pixel column / row coordinates (float32)."""
    cols = np.tile(np.arange(cam.width, dtype=np.float32), cam.height)
    rows = np.repeat(np.arange(cam.height, dtype=np.float32), cam.width)
    return cols, rows


def _shade(
    world: World, t: int, raster: Raster, px: _Pixels, world_pts: np.ndarray, ground_mat: np.ndarray
) -> np.ndarray:
    cam = world.camera
    h, w = cam.height, cam.width
    look = make_look(world.tags)
    table = world.palette.tables()
    image = np.zeros((h * w, 3), dtype=np.float32)
    c2w = invert_rigid(world.world_to_camera[t])

    # lit base colour per face (boxes) or per ground material, times a surface texture
    world_normals = affine(raster.face_normals, c2w, translate=False)
    sun = np.clip((world_normals * look.sun).sum(axis=1), 0.0, None)
    shade = (look.ambient + look.diffuse * sun).astype(np.float32)
    face_material = np.concatenate([[0, 0], np.repeat(world.part_material, 6)])
    face_rgb = table["rgb"][face_material] * (shade[:, None] * look.gain[None])
    ground_rgb = table["rgb"] * (shade[GROUND] * look.gain[None])
    mats = np.empty(len(px.solid), dtype=np.int64)
    mats[px.ground_rows] = ground_mat
    mats[px.box_rows] = world.part_material[px.part]
    colour = np.empty((len(px.solid), 3), dtype=np.float32)
    colour[px.ground_rows] = ground_rgb[ground_mat]
    colour[px.box_rows] = face_rgb[px.face[px.boxes]]

    # surface-anchored texture coordinates: world for static surfaces, part frame if moving
    local = world_pts.copy()
    if len(px.moving_rows):
        to_local = invert_rigid(world.part_pose[t]) @ invert_rigid(world.world_to_camera[t])[None]
        local[px.moving_rows] = _apply(
            to_local[:, :3, :].astype(np.float32), px.moving_part, px.points[px.moving_rows]
        )
    # pixels per metre of surface: f * cos(incidence) / depth, with cos = plane distance / range
    depth = px.depth[px.solid]
    distance = raster.face_distance.astype(np.float32)[px.face[px.solid]]
    footprint = np.float32(cam.fx) * distance * cam.inverse_ray_norms()[px.solid] / (depth * depth)
    factor, lit = texture(local, mats, table, footprint)
    colour *= factor[:, None]

    emissive = (table["emissive"] > 0).any(axis=1)
    glowing = np.flatnonzero(emissive[mats])
    if len(glowing):
        colour[glowing] += table["emissive"][mats[glowing]] * np.float32(look.emissive)
    if look.emissive > 0.5 and lit.any():
        colour[lit] += np.array([210, 180, 100], np.float32) * np.float32(look.emissive * 0.8)
    if look.fog_distance < 500:
        fog = np.exp(-depth / np.float32(look.fog_distance))[:, None]
        colour = colour * fog + look.fog_colour[None] * (1 - fog)
    image[px.solid] = colour
    if len(px.sky):
        dirs = affine(px.rays[px.sky], c2w, translate=False)
        dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
        brightness = 1.0 if world.tags["timeofday"] == "night" else float(look.gain.mean())
        image[px.sky] = sky_colour(dirs, look) * np.float32(brightness)
    image = image.reshape(h, w, 3)
    rng = np.random.default_rng([world.seed_state, t])
    weather_overlay(image, look, rng)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


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
