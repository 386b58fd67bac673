"""Mask head shapes and mask pasting against a float64 reference."""

from __future__ import annotations

import torch

from drivemtl.models.features import Features, FeatureSpec, ObjectFeatures
from drivemtl.models.heads.mask_head import MaskHead, paste_masks


def test_paste_exact_for_box_aligned_grid() -> None:
    probs = torch.zeros(1, 4, 4)
    probs[0, :, :2] = 1.0
    out = paste_masks(probs, torch.tensor([[2.0, 4.0, 10.0, 12.0]]), (16, 16))
    # Each mask cell covers 2x2 pixels. Pixel centres map to mask coordinates -0.25, 0.25, ...;
    # bilinear sampling with zeros outside the mask (as Detectron2's paste) gives, per axis:
    ys = torch.tensor([0.75, 1, 1, 1, 1, 1, 1, 0.75])
    xs = torch.tensor([0.75, 1, 1, 0.75, 0.25, 0, 0, 0])
    expected = torch.zeros(16, 16)
    expected[4:12, 2:10] = ys[:, None] * xs[None, :]
    assert out.shape == (1, 16, 16)
    assert torch.allclose(out[0], expected)


def test_mask_head_runs_on_detections() -> None:
    spec = FeatureSpec(image_channels=8, pixel_channels=8, strides=(4, 8, 16, 32))
    head = MaskHead(spec, num_classes=3, channels=8, num_convs=1)
    feats = Features(
        image=torch.zeros(1, 8, 2, 2),
        pixel=[torch.randn(1, 8, 64 // s, 64 // s) for s in (4, 8, 16, 32)],
        strides=(4, 8, 16, 32),
        input_size=(64, 64),
        image_sizes=[(64, 64)],
        objects=ObjectFeatures(
            proposals=[torch.zeros(0, 4)],
            detections=[torch.tensor([[0.0, 0.0, 20.0, 20.0], [5, 5, 60, 60.0]])],
            det_classes=[torch.tensor([1, 5])],  # class 5 is outside the mask head's classes
            det_scores=[torch.tensor([0.9, 0.8])],
        ),
    )
    out = head(feats)
    assert out.logits.shape == (1, 3, 28, 28)
    assert out.classes[0].tolist() == [1] and torch.allclose(out.scores[0], torch.tensor([0.9]))
