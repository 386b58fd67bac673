"""Z-buffered rasterisation of the ground plane and of oriented boxes (vectorised numpy + OpenCV).

The depth test runs on inverse depth, which is affine in pixel coordinates for a planar face, so
every covered pixel gets the exact depth of its face plane. Face ids: 0 sky, 1 ground,
2 + 6 * part + face for box faces.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from drivemtl.data.synthetic.camera import Camera, invert_rigid

NEAR = 0.1
MAX_DEPTH = 200.0
SKY, GROUND, FIRST_FACE = 0, 1, 2
_SHIFT = 4
_SCALE = float(1 << _SHIFT)

_SIGNS = np.array(
    [[(i >> 2 & 1) * 2 - 1, (i >> 1 & 1) * 2 - 1, (i & 1) * 2 - 1] for i in range(8)], float
)
_FACES = np.array(
    [[4, 6, 7, 5], [0, 1, 3, 2], [2, 3, 7, 6], [0, 4, 5, 1], [1, 5, 7, 3], [0, 2, 6, 4]]
)
_FACE_CORNERS = np.zeros((6, 8), dtype=bool)
_FACE_CORNERS[np.arange(6)[:, None], _FACES] = True
_FACE_NORMALS = np.array(
    [[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1]], float
)


@dataclass
class Raster:
    """Inverse depth (0 = sky) and face id per pixel, camera-frame face normals, and per-object
    amodal coverage / truncation for the objects asked about."""

    inv_depth: np.ndarray  # [H, W] float32
    face: np.ndarray  # [H, W] int32
    face_normals: np.ndarray  # [2 + 6P, 3] camera frame, facing the camera
    face_distance: np.ndarray  # [2 + 6P] distance from the camera to each face plane
    amodal_area: dict[int, int]
    truncated: set[int]


def _clip(poly: np.ndarray, values: np.ndarray, limit: float) -> np.ndarray:
    """Keep the part of a convex polygon where `values >= limit` (Sutherland-Hodgman, one plane)."""
    inside = values >= limit
    if inside.all():
        return poly
    if not inside.any():
        return poly[:0]
    out = []
    n = len(poly)
    for i in range(n):
        j = (i + 1) % n
        if inside[i]:
            out.append(poly[i])
        if inside[i] != inside[j]:
            t = (limit - values[i]) / (values[j] - values[i])
            out.append(poly[i] + t * (poly[j] - poly[i]))
    return np.asarray(out)


def _clip_rect(pts: np.ndarray, x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
    for axis, limit, sign in ((0, x0, 1.0), (0, x1, -1.0), (1, y0, 1.0), (1, y1, -1.0)):
        if len(pts) < 3:
            return pts[:0]
        pts = _clip(pts, sign * pts[:, axis], sign * limit)
    return pts


def _slow_part(
    p: int,
    corners: np.ndarray,
    face_n: np.ndarray,
    plane_c: np.ndarray,
    facing: np.ndarray,
    camera: Camera,
    inv_depth: np.ndarray,
    face: np.ndarray,
    pieces: list[tuple[int, int, np.ndarray]] | None,
) -> None:
    """Draw one box that crosses the near plane (or projects very far out), face by face."""
    w, h = camera.width, camera.height
    fx, fy, cx, cy = camera.fx, camera.fy, camera.cx, camera.cy
    for f in np.flatnonzero(facing):
        poly3 = _clip(corners[_FACES[f]], corners[_FACES[f], 2], NEAR)
        if len(poly3) < 3:
            continue
        pts = np.stack(
            [fx * poly3[:, 0] / poly3[:, 2] + cx, fy * poly3[:, 1] / poly3[:, 2] + cy], 1
        )
        pts = _clip_rect(pts, -1.0, -1.0, float(w), float(h))
        if len(pts) < 3:
            continue
        x0 = max(int(np.floor(pts[:, 0].min())), 0)
        x1 = min(int(np.ceil(pts[:, 0].max())) + 1, w)
        y0 = max(int(np.floor(pts[:, 1].min())), 0)
        y1 = min(int(np.ceil(pts[:, 1].max())) + 1, h)
        if x1 <= x0 or y1 <= y0:
            continue
        canvas = np.zeros((y1 - y0, x1 - x0), dtype=np.uint8)
        cv2.fillConvexPoly(
            canvas, np.rint((pts - (x0, y0)) * _SCALE).astype(np.int32), 1, cv2.LINE_8, _SHIFT
        )
        n, c = face_n[f], plane_c[f]
        a, b = n[0] / (fx * c), n[1] / (fy * c)
        c0 = (n[2] - n[0] * cx / fx - n[1] * cy / fy) / c
        region = ((b * np.arange(y0, y1) + c0)[:, None] + a * np.arange(x0, x1)[None, :]).astype(
            np.float32
        )
        np.minimum(region, np.float32(1.0 / NEAR), out=region)
        region[canvas == 0] = 0.0
        zone = inv_depth[y0:y1, x0:x1]
        win = region > zone
        np.copyto(zone, region, where=win)
        face[y0:y1, x0:x1][win] = FIRST_FACE + 6 * p + f
        if pieces is not None:
            pieces.append((x0, y0, canvas > 0))


def ground_inverse_depth(
    camera: Camera, world_to_camera: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Inverse depth of the ground plane y = 0 per pixel (0 where it is beyond MAX_DEPTH or above
    the horizon), and the ground normal in the camera frame."""
    cam_to_world = invert_rigid(world_to_camera)
    height = -cam_to_world[1, 3]
    row = cam_to_world[1, :3]
    cols = ((np.arange(camera.width) - camera.cx) / camera.fx * row[0] / height).astype(np.float32)
    rows = ((np.arange(camera.height) - camera.cy) / camera.fy * row[1] + row[2]) / height
    inv = rows.astype(np.float32)[:, None] + cols[None, :]
    inv[inv < 1.0 / MAX_DEPTH] = 0.0
    normal = world_to_camera[:3, :3] @ np.array([0.0, -1.0, 0.0])
    return inv, normal


def rasterize(
    camera: Camera,
    world_to_camera: np.ndarray,
    part_pose: np.ndarray,
    part_size: np.ndarray,
    part_object: np.ndarray,
    track_objects: set[int] | frozenset[int] = frozenset(),
) -> Raster:
    """Render ground + boxes into an inverse-depth / face-id buffer; also measure, for the objects
    in `track_objects`, their amodal pixel area inside the image and whether they are truncated."""
    w, h = camera.width, camera.height
    inv_depth, ground_normal = ground_inverse_depth(camera, world_to_camera)
    face = np.where(inv_depth > 0, GROUND, SKY).astype(np.int32)
    num_parts = len(part_size)
    normals = np.zeros((FIRST_FACE + 6 * num_parts, 3))
    normals[GROUND] = ground_normal
    distance = np.zeros(FIRST_FACE + 6 * num_parts)
    distance[GROUND] = -invert_rigid(world_to_camera)[1, 3]
    amodal_pieces: dict[int, list[tuple[int, int, np.ndarray]]] = {}
    truncated: set[int] = set()
    if num_parts == 0:
        return Raster(inv_depth, face, normals, distance, {}, truncated)

    to_cam = world_to_camera[None] @ part_pose  # [P, 4, 4]
    corners_local = _SIGNS[None] * (part_size[:, None, :] / 2)  # [P, 8, 3]
    corners = np.einsum("pij,pkj->pki", to_cam[:, :3, :3], corners_local) + to_cam[:, None, :3, 3]
    face_n = np.einsum("pij,fj->pfi", to_cam[:, :3, :3], _FACE_NORMALS)  # [P, 6, 3]
    first_corner = corners[:, _FACES[:, 0], :]  # [P, 6, 3]
    plane_c = np.einsum("pfi,pfi->pf", face_n, first_corner)
    normals[FIRST_FACE:] = face_n.reshape(-1, 3)
    distance[FIRST_FACE:] = np.abs(plane_c).ravel()

    z = corners[..., 2]
    keep = (z.max(axis=1) > NEAR) & (z.min(axis=1) < MAX_DEPTH)
    zc = np.maximum(z, NEAR)
    u = camera.fx * corners[..., 0] / zc + camera.cx
    v = camera.fy * corners[..., 1] / zc + camera.cy
    all_front = z.min(axis=1) > NEAR
    facing = plane_c < -1e-9
    used = (facing[:, :, None] & _FACE_CORNERS[None]).any(axis=1)  # corners of visible faces
    inf = np.inf
    umin, umax = np.where(used, u, inf).min(1), np.where(used, u, -inf).max(1)
    vmin, vmax = np.where(used, v, inf).min(1), np.where(used, v, -inf).max(1)
    keep &= used.any(axis=1)
    keep &= ~(all_front & ((umax < -1) | (umin > w) | (vmax < -1) | (vmin > h)))
    fast = all_front & (np.abs(u).max(1) < 16000) & (np.abs(v).max(1) < 16000)
    part_truncated = (
        ~all_front | (umin < -0.5) | (umax > w - 0.5) | (vmin < -0.5) | (vmax > h - 0.5)
    )

    # inverse depth of face planes: inv = a * col + b * row + c0 (camera-frame plane n.X = c)
    fx, fy, cx, cy = camera.fx, camera.fy, camera.cx, camera.cy
    safe_c = np.where(facing, plane_c, -1.0)
    coef_a = face_n[..., 0] / (fx * safe_c)
    coef_b = face_n[..., 1] / (fy * safe_c)
    coef_c = (face_n[..., 2] - face_n[..., 0] * cx / fx - face_n[..., 1] * cy / fy) / safe_c
    order = np.argsort(~facing, axis=1, kind="stable")[:, :3]  # the (at most 3) facing faces
    rows = np.arange(num_parts)[:, None]
    slot_ok = facing[rows, order]
    tables = []
    for coef in (coef_a, coef_b, coef_c):
        tab = np.zeros((num_parts, 4), dtype=np.float32)
        tab[:, 1:] = np.where(slot_ok, coef[rows, order], 0.0)
        tables.append(tab)
    tab_face = np.zeros((num_parts, 4), dtype=np.int32)
    tab_face[:, 1:] = FIRST_FACE + 6 * rows + order
    points_fixed = np.zeros((num_parts, 8, 2), dtype=np.int32)
    points_fixed[fast] = np.rint(np.stack([u[fast], v[fast]], -1) * _SCALE).astype(np.int32)

    us = np.arange(w, dtype=np.float32)
    vs = np.arange(h, dtype=np.float32)
    x0s = np.clip(np.floor(umin), 0, w).astype(np.int64)
    x1s = np.clip(np.ceil(umax) + 1, 0, w).astype(np.int64)
    y0s = np.clip(np.floor(vmin), 0, h).astype(np.int64)
    y1s = np.clip(np.ceil(vmax) + 1, 0, h).astype(np.int64)
    # every face polygon in fixed point, relative to its part's bounding box
    offsets = (np.stack([x0s, y0s], axis=1) * int(_SCALE)).astype(np.int32)
    polygons = np.ascontiguousarray(points_fixed[:, _FACES] - offsets[:, None, None, :])
    slots = [[k for k, ok in enumerate(row) if ok] for row in slot_ok.tolist()]
    order_list = order.tolist()
    bounds = np.stack([x0s, x1s, y0s, y1s], axis=1).tolist()
    for p in np.flatnonzero(keep).tolist():
        obj = int(part_object[p])
        track = obj in track_objects
        if not fast[p]:
            _slow_part(
                p,
                corners[p],
                face_n[p],
                plane_c[p],
                facing[p],
                camera,
                inv_depth,
                face,
                amodal_pieces.setdefault(obj, []) if track else None,
            )
            if track:
                truncated.add(obj)
            continue
        x0, x1, y0, y1 = bounds[p]
        if x1 <= x0 or y1 <= y0:
            continue
        canvas = np.zeros((y1 - y0, x1 - x0), dtype=np.uint8)
        for k in slots[p]:
            cv2.fillConvexPoly(canvas, polygons[p, order_list[p][k]], k + 1, cv2.LINE_8, _SHIFT)
        if len(slots[p]) == 1:  # one visible face: its plane coefficients are scalars
            f = order_list[p][0]
            region = (coef_b[p, f] * vs[y0:y1, None] + coef_c[p, f]) + coef_a[p, f] * us[
                None, x0:x1
            ]
            region = region.astype(np.float32)
            region *= canvas
        else:
            region = tables[0][p][canvas] * us[None, x0:x1]
            region += tables[1][p][canvas] * vs[y0:y1, None]
            region += tables[2][p][canvas]
        zone = inv_depth[y0:y1, x0:x1]
        win = region > zone
        np.copyto(zone, region, where=win)
        np.copyto(face[y0:y1, x0:x1], tab_face[p][canvas], where=win)
        if track:
            amodal_pieces.setdefault(obj, []).append((x0, y0, canvas > 0))
            if part_truncated[p]:
                truncated.add(obj)
    amodal = {}
    for obj, pieces in amodal_pieces.items():
        if not pieces:
            continue
        ax0 = min(x for x, _, _ in pieces)
        ay0 = min(y for _, y, _ in pieces)
        ax1 = max(x + c.shape[1] for x, _, c in pieces)
        ay1 = max(y + c.shape[0] for _, y, c in pieces)
        union = np.zeros((ay1 - ay0, ax1 - ax0), dtype=bool)
        for x, y, c in pieces:
            union[y - ay0 : y - ay0 + c.shape[0], x - ax0 : x - ax0 + c.shape[1]] |= c
        amodal[obj] = int(union.sum())
    # normals face the camera (boxes: only facing faces are drawn; the ground is seen from above)
    return Raster(inv_depth, face, normals, distance, amodal, truncated)
