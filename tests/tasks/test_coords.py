"""Mapping boxes, points and maps from transformed input coordinates back to the original."""

from __future__ import annotations

import torch

from drivemtl.structures.sample import SampleMeta
from drivemtl.tasks.coords import boxes_to_original, dense_to_original, points_to_original


def test_points_undo_flip_crop_and_scale() -> None:
    # original 100x200 -> resized x0.5 (50x100) -> crop at (y0=10, x0=20) of 30x40 -> flipped
    meta = SampleMeta(name="a", image_set="s", orig_size=(100, 200), scale=(0.5, 0.5),
                      crop=(10, 20), flipped=True)  # fmt: skip
    pts = torch.tensor([[0.0, 0.0], [40.0, 30.0], [10.0, 5.0]])
    out = points_to_original(pts, meta, (30, 40))
    expected = torch.tensor([[(40 + 20) / 0.5, 10 / 0.5], [20 / 0.5, 40 / 0.5], [100.0, 30.0]])
    assert torch.allclose(out, expected)


def test_boxes_stay_ordered_and_clipped() -> None:
    meta = SampleMeta(name="a", image_set="s", orig_size=(20, 30), flipped=True)
    out = boxes_to_original(torch.tensor([[2.0, 3.0, 10.0, 25.0]]), meta, (20, 30))
    assert torch.allclose(out, torch.tensor([[20.0, 3.0, 28.0, 20.0]]))


def test_dense_nearest_resize_and_padding() -> None:
    meta = SampleMeta(name="a", image_set="s", orig_size=(4, 6), scale=(0.5, 0.5))
    labels = torch.tensor([[[1, 2, 3, 9], [4, 5, 6, 9], [9, 9, 9, 9]]])  # 2x3 image padded
    out = dense_to_original(labels, meta, (2, 3), mode="nearest")
    expected = torch.tensor([[1, 1, 2, 2, 3, 3]] * 2 + [[4, 4, 5, 5, 6, 6]] * 2)
    assert torch.equal(out[0], expected) and out.dtype == labels.dtype
