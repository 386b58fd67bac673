"""Bitmask and RLE decoders against hand-built encodings."""

from __future__ import annotations

import numpy as np

from drivemtl.data.bitmasks import (
    decode_class_map,
    decode_instance_bitmask,
    decode_lanes,
    mask_to_rle,
    rle_to_mask,
)
from drivemtl.structures.scalabel import RLE


def test_lane_byte_decoding_by_hand():
    # category 3 (double yellow), vertical (bit 5), dashed (bit 4); 255 background; 8 = bg bit only
    mask = np.array([[3 | 32 | 16, 255, 8, 6]], dtype=np.uint8)
    out = decode_lanes(mask)
    assert out[:, 0, 0].tolist() == [4, 2, 2]
    assert out[:, 0, 1].tolist() == [0, 0, 0] and out[:, 0, 2].tolist() == [0, 0, 0]
    assert out[:, 0, 3].tolist() == [7, 1, 1]


def test_class_map_out_of_range_is_ignore():
    assert decode_class_map(np.array([[0, 18, 19, 255]], np.uint8), 19).tolist() == [
        [0, 18, 255, 255]
    ]


def test_instance_bitmask_by_hand():
    rgba = np.zeros((4, 5, 4), dtype=np.uint8)
    rgba[1:3, 1:4] = (3, 2, 1, 2)  # car, crowd flag, id 258
    rgba[3, 4] = (1, 0, 0, 7)  # pedestrian, id 7
    inst = decode_instance_bitmask(rgba)
    assert inst.ids.tolist() == [7, 258] and inst.categories.tolist() == [0, 2]
    assert inst.flags.tolist() == [0, 2]
    assert inst.boxes.tolist() == [[4, 3, 5, 4], [1, 1, 4, 3]]
    assert inst.masks.sum(axis=(1, 2)).tolist() == [1, 6]


def test_rle_round_trip_and_known_counts():
    mask = np.zeros((3, 4), dtype=bool)
    mask[0, 1] = mask[1, 1] = mask[2, 3] = True
    rle = mask_to_rle(mask)
    # column-major runs: 3 zeros, 2 ones, 6 zeros, 1 one -> COCO compressed "32" "61" chars
    assert rle_to_mask(RLE(counts=rle.counts, size=(3, 4))).tolist() == mask.tolist()
    from faster_coco_eval.core import mask as coco_mask

    uncompressed = coco_mask.frPyObjects({"size": [3, 4], "counts": [3, 2, 6, 1]}, 3, 4)
    assert rle.counts.encode() == uncompressed["counts"]
