"""PNG encodings of dense labels: KITTI-style 16-bit depth / flow / normals and BDD100K bitmasks.

Arrays handed to and returned by the encoders are in file channel order (RGB / RGBA); `write_png`
and `read_png_unchanged` convert to and from OpenCV's BGR order, so files agree with other tools.
Depth: uint16 = metres * 256 (0 invalid). Flow: uint16 channels (u, v, valid), value =
flow * 64 + 2**15. Normals: uint16 per channel x, y, z, value = (n + 1) * 32767.5, (0, 0, 0) invalid.
Lanes: one byte, bits 0-2 category, bit 4 style, bit 5 direction, 255 background. Instances: RGBA,
R = 1-based thing class, G = flags, instance id = B * 256 + A.
"""

from __future__ import annotations

import struct
import zlib
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
    return cv2.merge(flow_planes(flow, valid))


def flow_planes(flow: np.ndarray, valid: np.ndarray) -> list[np.ndarray]:
    """`encode_flow` as three uint16 [H, W] planes (u, v, valid), for `write_png_planes`."""
    flow = np.asarray(flow, dtype=np.float32)
    if flow.ndim != 3 or flow.shape[0] != 2:
        raise ValueError(f"flow must be [2, H, W], got {flow.shape}")
    valid = np.asarray(valid, dtype=bool) & np.isfinite(flow).all(axis=0)
    values = np.where(valid, flow, np.float32(0.0))
    values *= np.float32(FLOW_SCALE)
    values += np.float32(FLOW_OFFSET)
    np.rint(values, out=values)
    np.clip(values, 0, 65535, out=values)
    values *= valid
    planes = values.astype(np.uint16)
    return [planes[0], planes[1], valid.astype(np.uint16)]


def decode_flow(png: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """uint16 [H, W, 3] (u, v, valid) -> (flow [2, H, W] float32 pixels, valid [H, W] bool)."""
    valid = png[..., 2] > 0
    flow = (png[..., :2].astype(np.float32) - np.float32(FLOW_OFFSET)) / np.float32(FLOW_SCALE)
    flow[~valid] = 0.0
    return np.ascontiguousarray(flow.transpose(2, 0, 1)), valid


def encode_normals(normals: np.ndarray) -> np.ndarray:
    """Unit normals [3, H, W] (all-zero = invalid) -> uint16 [H, W, 3] in (x, y, z) order."""
    return cv2.merge(normal_planes(normals))


def normal_planes(normals: np.ndarray) -> list[np.ndarray]:
    """`encode_normals` as three uint16 [H, W] planes (x, y, z), for `write_png_planes`."""
    normals = np.asarray(normals, dtype=np.float32)
    if normals.ndim != 3 or normals.shape[0] != 3:
        raise ValueError(f"normals must be [3, H, W], got {normals.shape}")
    valid = (normals[0] != 0) | (normals[1] != 0) | (normals[2] != 0)
    values = normals + np.float32(1.0)
    values *= np.float32(NORMAL_SCALE)
    np.rint(values, out=values)
    np.clip(values, 0, 65535, out=values)
    values *= valid
    planes = values.astype(np.uint16)
    lost = valid & (planes[0] == 0) & (planes[1] == 0) & (planes[2] == 0)
    if lost.any():
        planes[:, lost] = 1  # never let a valid normal read as invalid
    return [planes[0], planes[1], planes[2]]


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
    return cv2.merge(instance_planes(category, instance_id, flags))


def instance_planes(
    category: np.ndarray, instance_id: np.ndarray, flags: np.ndarray | None = None
) -> list[np.ndarray]:
    """`encode_instance_rgba` as four uint8 [H, W] planes (R, G, B, A), for `write_png_planes`."""
    category = np.asarray(category)
    instance_id = np.asarray(instance_id)
    if instance_id.max(initial=0) > 65535:
        raise ValueError("instance ids must fit in 16 bits (B * 256 + A)")
    fg = category >= 0
    ids = np.where(fg, instance_id, 0).astype(np.uint16)  # low 16 bits, as B * 256 + A
    low_high = ids.astype("<u2").view(np.uint8).reshape(*ids.shape, 2)
    return [
        np.where(fg, category + 1, 0).astype(np.uint8),
        np.zeros(category.shape, np.uint8)
        if flags is None
        else np.where(fg, flags, 0).astype(np.uint8),
        low_high[..., 1],
        low_high[..., 0],
    ]


def decode_instance_rgba(rgba: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """BDD RGBA -> (0-based class, -1 = none; instance id, 0 = none; G flags), each [H, W]."""
    category = rgba[..., 0].astype(np.int64) - 1
    instance_id = (rgba[..., 2].astype(np.int64) << 8) + rgba[..., 3]
    return category, instance_id, rgba[..., 1].astype(np.int64)


PNG_FILTERS = {"none": 0, "sub": 1, "up": 2, "paeth": 4}  # PNG row filter type bytes
_PNG_COLOUR_TYPES = {1: 0, 3: 2, 4: 6}  # channels -> grey, RGB, RGBA
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def write_png(
    path: str | Path, array: np.ndarray, compression: int = 1, row_filter: str = "sub"
) -> None:
    """Write a 1-, 3- or 4-channel uint8 / uint16 array given in RGB(A) order as a PNG file.

    `row_filter` (one of `PNG_FILTERS`, used for every row) only trades speed for size: the file
    stays lossless. Piecewise-constant maps encode fastest with "up", smooth rows (flow) with "sub".
    """
    write_bytes(Path(path), encode_png(array, compression, row_filter))


def write_png_planes(
    path: str | Path, planes: list[np.ndarray], compression: int = 1, row_filter: str = "sub"
) -> None:
    """Write 1, 3 or 4 same-shape [H, W] planes given in RGB(A) order as one PNG file (the same
    bytes as `write_png` of the stacked array)."""
    if len(planes) not in _PNG_COLOUR_TYPES:
        raise ValueError(f"a PNG needs 1, 3 or 4 planes, got {len(planes)}")
    if len(planes) == 1:
        array = planes[0]
    else:
        # interleave and (for 16 bits) swap to PNG's big-endian byte order in one pass
        dtype = np.dtype(">u2") if planes[0].dtype == np.uint16 else planes[0].dtype
        array = np.empty((*planes[0].shape, len(planes)), dtype)
        for c, plane in enumerate(planes):
            array[..., c] = plane
    write_bytes(Path(path), encode_png(array, compression, row_filter))


def encode_png(array: np.ndarray, compression: int = 1, row_filter: str = "sub") -> bytes:
    """The PNG file bytes of a [H, W] or [H, W, 1 | 3 | 4] uint8 / uint16 array in RGB(A) order:
    one IDAT chunk, deflated by zlib at level `compression` (0-9) after `row_filter` on every row.
    Deterministic: the same array and settings always give the same bytes."""
    if row_filter not in PNG_FILTERS:
        raise ValueError(f"unknown PNG row filter {row_filter!r}; known: {', '.join(PNG_FILTERS)}")
    if array.dtype.kind != "u" or array.dtype.itemsize not in (1, 2):
        raise ValueError(f"PNG arrays must be uint8 or uint16, got {array.dtype}")
    channels = 1 if array.ndim == 2 else array.shape[2] if array.ndim == 3 else 0
    if channels not in _PNG_COLOUR_TYPES or min(array.shape[:2], default=0) < 1:
        raise ValueError(f"PNG arrays must be [H, W] or [H, W, 1 | 3 | 4], got {array.shape}")
    h, w = array.shape[:2]
    depth = 8 * array.dtype.itemsize
    raw = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder(">")).view(np.uint8)
    raw = raw.reshape(h, -1)
    rows = _filter_rows(raw, channels * array.dtype.itemsize, row_filter)
    header = struct.pack(">IIBBBBB", w, h, depth, _PNG_COLOUR_TYPES[channels], 0, 0, 0)
    return b"".join(
        (
            _PNG_SIGNATURE,
            _png_chunk(b"IHDR", header),
            _png_chunk(b"IDAT", zlib.compress(rows, compression)),
            _png_chunk(b"IEND", b""),
        )
    )


def _filter_rows(raw: np.ndarray, bpp: int, row_filter: str) -> np.ndarray:
    """[H, row bytes] -> [H, 1 + row bytes]: each row prefixed by its filter type, then filtered
    (PNG specification, section 9; byte arithmetic modulo 256; `bpp` bytes per pixel)."""
    h, n = raw.shape
    out = np.empty((h, n + 1), np.uint8)
    out[:, 0] = PNG_FILTERS[row_filter]
    body = out[:, 1:]
    if row_filter == "none":
        body[...] = raw
    elif row_filter == "sub":  # x - left
        body[:, :bpp] = raw[:, :bpp]
        np.subtract(raw[:, bpp:], raw[:, :-bpp], out=body[:, bpp:])
    elif row_filter == "up":  # x - above
        body[0] = raw[0]
        np.subtract(raw[1:], raw[:-1], out=body[1:])
    else:  # paeth: x - the one of left, above, upper-left closest to left + above - upper-left
        a = np.zeros((h, n), np.int16)
        b = np.zeros((h, n), np.int16)
        c = np.zeros((h, n), np.int16)
        a[:, bpp:] = raw[:, :-bpp]
        b[1:] = raw[:-1]
        c[1:, bpp:] = raw[:-1, :-bpp]
        pa, pb, pc = np.abs(b - c), np.abs(a - c), np.abs(a + b - 2 * c)
        predictor = np.where((pa <= pb) & (pa <= pc), a, np.where(pb <= pc, b, c))
        np.subtract(raw, predictor.astype(np.uint8), out=body)
    return out


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(data, zlib.crc32(kind))
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def write_bytes(path: Path, data: bytes | np.ndarray) -> None:
    """Write a byte buffer, creating missing parent folders (only looked up when the open fails)."""
    try:
        handle = open(path, "wb")  # noqa: SIM115
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(path, "wb")  # noqa: SIM115
    with handle:
        handle.write(data)


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
