"""Decoders of the BDD100K bitmask PNGs and of Scalabel RLE masks.

Encodings (BDD100K toolkit): semantic / drivable one channel, class id per pixel, 255 = ignore;
lanes one byte per pixel, bits 0-2 category, bit 3 background, bit 4 style, bit 5 direction;
instance / MOTS RGBA with R = category id (1-based), G = flags (truncated << 3 | occluded << 2 |
crowd << 1 | ignored), instance id = (B << 8) + A, 0 = no instance.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from faster_coco_eval.core import mask as coco_mask

from drivemtl.data.png_codecs import FLAG_CROWD, FLAG_IGNORED, FLAG_OCCLUDED, FLAG_TRUNCATED
from drivemtl.structures.bdd import (
    IGNORE_INDEX,
    LANE_BACKGROUND_BIT,
    LANE_CATEGORY_BITS,
    LANE_DIRECTION_BIT,
    LANE_STYLE_BIT,
)
from drivemtl.structures.scalabel import RLE

__all__ = [
    "FLAG_CROWD", "FLAG_IGNORED", "FLAG_OCCLUDED", "FLAG_TRUNCATED", "BitmaskInstances",
    "decode_class_map", "decode_instance_bitmask", "decode_lanes", "mask_to_rle", "rle_to_mask",
]  # fmt: skip


def decode_lanes(mask: np.ndarray) -> np.ndarray:
    """One-byte lane bitmask [H, W] -> [3, H, W] int64 (category 1..8, direction 1..2, style 1..2;
    0 = background in every channel)."""
    mask = mask.astype(np.int64)
    foreground = (mask & LANE_BACKGROUND_BIT) == 0
    out = np.zeros((3, *mask.shape), dtype=np.int64)
    out[0] = np.where(foreground, (mask & LANE_CATEGORY_BITS) + 1, 0)
    out[1] = np.where(foreground, ((mask & LANE_DIRECTION_BIT) > 0) + 1, 0)
    out[2] = np.where(foreground, ((mask & LANE_STYLE_BIT) > 0) + 1, 0)
    return out


def decode_class_map(mask: np.ndarray, num_classes: int) -> np.ndarray:
    """Semantic / drivable bitmask -> [H, W] int64; ids >= num_classes become 255 (ignore)."""
    out = mask.astype(np.int64)
    out[out >= num_classes] = IGNORE_INDEX
    return out


@dataclass
class BitmaskInstances:
    """Instances decoded from an RGBA bitmask: ids, 0-based categories, flags, [N, H, W] masks."""

    ids: np.ndarray
    categories: np.ndarray
    flags: np.ndarray
    masks: np.ndarray

    @property
    def boxes(self) -> np.ndarray:
        """[N, 4] float32 xyxy boxes enclosing each mask (pixel edges, so x2 = last column + 1)."""
        boxes = np.zeros((len(self.ids), 4), dtype=np.float32)
        for i, mask in enumerate(self.masks):
            ys = np.flatnonzero(mask.any(axis=1))
            xs = np.flatnonzero(mask.any(axis=0))
            if len(xs):
                boxes[i] = (xs[0], ys[0], xs[-1] + 1, ys[-1] + 1)
        return boxes


def decode_instance_bitmask(rgba: np.ndarray) -> BitmaskInstances:
    """RGBA instance / MOTS bitmask [H, W, 4] -> instances sorted by id (id 0 = background)."""
    if rgba.ndim != 3 or rgba.shape[2] != 4:
        raise ValueError(f"instance bitmask must be [H, W, 4] RGBA, got {rgba.shape}")
    ids_map = (rgba[..., 2].astype(np.int32) << 8) | rgba[..., 3]
    flat = ids_map.ravel()
    ids = np.flatnonzero(np.bincount(flat, minlength=1)[1:]) + 1  # O(HW), no sort
    # R and G of each id (every pixel of an instance carries the same values)
    categories_lut = np.zeros(65536, dtype=np.int64)
    flags_lut = np.zeros(65536, dtype=np.int64)
    categories_lut[flat] = rgba[..., 0].ravel()
    flags_lut[flat] = rgba[..., 1].ravel()
    masks = ids_map[None] == ids[:, None, None].astype(np.int32)
    return BitmaskInstances(
        ids=ids.astype(np.int64),
        categories=categories_lut[ids] - 1,
        flags=flags_lut[ids],
        masks=masks,
    )


def rle_to_mask(rle: RLE) -> np.ndarray:
    """Scalabel / COCO compressed RLE -> [H, W] bool mask."""
    obj = {"size": [int(rle.size[0]), int(rle.size[1])], "counts": rle.counts.encode("ascii")}
    return coco_mask.decode(obj).astype(bool)


def mask_to_rle(mask: np.ndarray) -> RLE:
    """[H, W] bool mask -> Scalabel RLE (COCO compressed counts, column-major like pycocotools)."""
    encoded = coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))
    counts = encoded["counts"]
    if isinstance(counts, bytes):
        counts = counts.decode("ascii")
    return RLE(counts=counts, size=(int(mask.shape[0]), int(mask.shape[1])))
