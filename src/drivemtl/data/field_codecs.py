"""PNG codecs of dense data fields: how a field's `<frame>.png` files decode into targets and how
predictions encode into files (the `codec` of a `structures.fields.DataField`).

Readers read a field's PNG with the codec's dtype and channel count (checked, so a file in the
wrong encoding fails early), resize it and decode it; writers encode a prediction with it. A
plug-in field with its own encoding registers a codec here (`FIELD_CODECS.add`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from drivemtl.data.bitmasks import decode_class_map, decode_lanes
from drivemtl.data.png_codecs import (
    decode_depth,
    decode_normals,
    encode_depth,
    encode_lane_byte,
    encode_normals,
)
from drivemtl.registry import Registry
from drivemtl.structures.fields import DataField


@dataclass(frozen=True)
class FieldCodec:
    """A PNG encoding: the file's dtype and channels, decode (PNG array -> the field's array,
    channels first) and encode (the field's or its prediction's array -> PNG array)."""

    dtype: type
    channels: int
    decode: Callable[[np.ndarray, DataField], np.ndarray]
    encode: Callable[[np.ndarray, DataField], np.ndarray]


FIELD_CODECS: Registry[FieldCodec] = Registry("field codec")


def codec_of(spec: DataField) -> FieldCodec:
    """The codec a field declares (ValueError naming the field when it declares none)."""
    if spec.codec is None:
        raise ValueError(f"data field {spec.name!r} declares no codec: it has no PNG files")
    return FIELD_CODECS.get(spec.codec)


def _decode_class_map(png: np.ndarray, spec: DataField) -> np.ndarray:
    if spec.classes is None:
        return png.astype(np.int64)
    return decode_class_map(png, spec.classes)


def _encode_class_map(value: np.ndarray, spec: DataField) -> np.ndarray:
    return np.clip(value, 0, 255).astype(np.uint8)


def _encode_lanes(value: np.ndarray, spec: DataField) -> np.ndarray:
    lanes = value.astype(np.int64)
    category = np.where(lanes[0] > 0, lanes[0] - 1, -1)
    return encode_lane_byte(category, lanes[1] == 2, lanes[2] == 2)


FIELD_CODECS.add(
    "class_map", FieldCodec(np.uint8, 1, _decode_class_map, _encode_class_map)
)  # ids, 255 = ignore
FIELD_CODECS.add(
    "lane_byte", FieldCodec(np.uint8, 1, lambda p, _: decode_lanes(p), _encode_lanes)
)  # BDD100K one-byte lane bitmask <-> [3, H, W] category / direction / style
FIELD_CODECS.add(
    "depth16", FieldCodec(np.uint16, 1, lambda p, _: decode_depth(p), lambda v, _: encode_depth(v))
)  # KITTI: metres * 256, 0 = invalid
FIELD_CODECS.add(
    "normals16",
    FieldCodec(np.uint16, 3, lambda p, _: decode_normals(p), lambda v, _: encode_normals(v)),
)  # (n + 1) * 32767.5 per axis, all-zero = invalid
