"""PNG encodings of dense labels: KITTI-style 16-bit depth / flow / normals and BDD100K bitmasks.

Arrays handed to and returned by the encoders are in file channel order (RGB / RGBA); `write_png`
and `read_png_unchanged` convert to and from OpenCV's BGR order, so files agree with other tools.
Depth: uint16 = metres * 256 (0 invalid). Flow: uint16 channels (u, v, valid), value =
flow * 64 + 2**15. Normals: uint16 per channel x, y, z, value = (n + 1) * 32767.5, (0, 0, 0) invalid.
Lanes: one byte, bits 0-2 category, bit 4 style, bit 5 direction, 255 background. Instances: RGBA,
R = 1-based thing class, G = flags, instance id = B * 256 + A.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from drivemtl.structures.bdd import LANE_DIRECTION_BIT, LANE_STYLE_BIT

DEPTH_SCALE = 256.0
MAX_DEPTH = 65535 / DEPTH_SCALE
FLOW_SCALE = 64.0
FLOW_OFFSET = 2.0**15
NORMAL_SCALE = 32767.5
LANE_BACKGROUND = 255
FLAG_TRUNCATED = 1 << 3
FLAG_OCCLUDED = 1 << 2
FLAG_CROWD = 1 << 1
FLAG_IGNORED = 1


def encode_depth(depth: np.ndarray) -> np.ndarray:
    """Float metres [H, W] -> uint16 (metres * 256, rounded); <= 0, non-finite or too far -> 0."""
    scaled = np.asarray(depth, dtype=np.float32) * np.float32(DEPTH_SCALE)
    valid = np.isfinite(scaled) & (scaled > 0) & (scaled < 65535.5)
    scaled = np.rint(np.where(valid, scaled, 0.0))
    out = scaled.astype(np.uint16)
    out[valid & (out == 0)] = 1  # a tiny positive depth stays valid
    return out


def decode_depth(png: np.ndarray) -> np.ndarray:
    """uint16 [H, W] -> float32 metres [H, W] (0 = invalid)."""
    return png.astype(np.float32) / np.float32(DEPTH_SCALE)


def encode_flow(flow: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Flow [2, H, W] pixels and valid [H, W] -> uint16 [H, W, 3] in (u, v, valid) order."""
    flow = np.asarray(flow, dtype=np.float32)
    if flow.ndim != 3 or flow.shape[0] != 2:
        raise ValueError(f"flow must be [2, H, W], got {flow.shape}")
    valid = np.asarray(valid, dtype=bool) & np.isfinite(flow).all(axis=0)
    planes = []
    for c in range(2):
        values = np.where(valid, flow[c], np.float32(0.0))
        values *= np.float32(FLOW_SCALE)
        values += np.float32(FLOW_OFFSET)
        np.rint(values, out=values)
        np.clip(values, 0, 65535, out=values)
        values *= valid
        planes.append(values.astype(np.uint16))
    planes.append(valid.astype(np.uint16))
    return cv2.merge(planes)


def decode_flow(png: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """uint16 [H, W, 3] (u, v, valid) -> (flow [2, H, W] float32 pixels, valid [H, W] bool)."""
    valid = png[..., 2] > 0
    flow = (png[..., :2].astype(np.float32) - np.float32(FLOW_OFFSET)) / np.float32(FLOW_SCALE)
    flow[~valid] = 0.0
    return np.ascontiguousarray(flow.transpose(2, 0, 1)), valid


def encode_normals(normals: np.ndarray) -> np.ndarray:
    """Unit normals [3, H, W] (all-zero = invalid) -> uint16 [H, W, 3] in (x, y, z) order."""
    normals = np.asarray(normals, dtype=np.float32)
    if normals.ndim != 3 or normals.shape[0] != 3:
        raise ValueError(f"normals must be [3, H, W], got {normals.shape}")
    valid = (normals[0] != 0) | (normals[1] != 0) | (normals[2] != 0)
    planes = []
    for c in range(3):
        values = normals[c] + np.float32(1.0)
        values *= np.float32(NORMAL_SCALE)
        np.rint(values, out=values)
        np.clip(values, 0, 65535, out=values)
        values *= valid
        planes.append(values.astype(np.uint16))
    out = cv2.merge(planes)
    lost = valid & (planes[0] == 0) & (planes[1] == 0) & (planes[2] == 0)
    out[lost] = 1  # never let a valid normal read as invalid
    return out


def decode_normals(png: np.ndarray) -> np.ndarray:
    """uint16 [H, W, 3] -> float32 [3, H, W] camera-frame normals (all-zero = invalid)."""
    normals = png.astype(np.float32) / np.float32(NORMAL_SCALE) - 1.0
    normals[(png == 0).all(axis=-1)] = 0.0
    return np.ascontiguousarray(normals.transpose(2, 0, 1))


def encode_lane_byte(category: np.ndarray, direction: np.ndarray, style: np.ndarray) -> np.ndarray:
    """Per-pixel lane category (0..7, -1 = background), direction (0 parallel / 1 vertical),
    style (0 solid / 1 dashed) -> BDD one-byte lane bitmask (255 = background)."""
    category = np.asarray(category)
    value = (
        (category & 0b111)
        | np.where(np.asarray(direction) > 0, LANE_DIRECTION_BIT, 0)
        | np.where(np.asarray(style) > 0, LANE_STYLE_BIT, 0)
    )
    return np.where(category >= 0, value, LANE_BACKGROUND).astype(np.uint8)


def encode_instance_rgba(
    category: np.ndarray, instance_id: np.ndarray, flags: np.ndarray | None = None
) -> np.ndarray:
    """Per-pixel 0-based thing class (-1 = none), instance id (1..65535) and G flags -> BDD RGBA."""
    category = np.asarray(category)
    instance_id = np.asarray(instance_id).astype(np.int64)
    if instance_id.max(initial=0) > 65535:
        raise ValueError("instance ids must fit in 16 bits (B * 256 + A)")
    fg = category >= 0
    ids = np.where(fg, instance_id, 0)
    planes = [
        np.where(fg, category + 1, 0).astype(np.uint8),
        np.zeros(category.shape, np.uint8)
        if flags is None
        else np.where(fg, flags, 0).astype(np.uint8),
        (ids >> 8).astype(np.uint8),
        (ids & 255).astype(np.uint8),
    ]
    return cv2.merge(planes)


def decode_instance_rgba(rgba: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """BDD RGBA -> (0-based class, -1 = none; instance id, 0 = none; G flags), each [H, W]."""
    category = rgba[..., 0].astype(np.int64) - 1
    instance_id = (rgba[..., 2].astype(np.int64) << 8) + rgba[..., 3]
    return category, instance_id, rgba[..., 1].astype(np.int64)


def write_png(path: str | Path, array: np.ndarray, compression: int = 1) -> None:
    """Write a 1-, 3- or 4-channel uint8 / uint16 array given in RGB(A) order as a PNG file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if array.ndim == 3:
        code = cv2.COLOR_RGBA2BGRA if array.shape[2] == 4 else cv2.COLOR_RGB2BGR
        array = cv2.cvtColor(array, code)
    params = [
        cv2.IMWRITE_PNG_COMPRESSION,
        compression,
        cv2.IMWRITE_PNG_FILTER,
        cv2.IMWRITE_PNG_FILTER_SUB,
    ]
    ok, data = cv2.imencode(".png", array, params)
    if not ok:
        raise OSError(f"{path}: OpenCV could not encode the PNG")
    path.write_bytes(data.tobytes())


def read_png_unchanged(path: str | Path) -> np.ndarray:
    """Read a PNG as stored (uint8 / uint16), channels in RGB(A) order."""
    data = np.fromfile(str(path), dtype=np.uint8)
    image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if image is None:
        raise OSError(f"{path}: not a readable PNG")
    if image.ndim == 3:
        code = cv2.COLOR_BGRA2RGBA if image.shape[2] == 4 else cv2.COLOR_BGR2RGB
        image = cv2.cvtColor(image, code)
    return image
