"""Semantic-FPN decoder: structure, output sizes, and the sum over levels."""

from __future__ import annotations

import torch

from drivemtl.models.features import Features, FeatureSpec
from drivemtl.models.heads.dense_decoder import SemanticFPNDecoder

SPEC = FeatureSpec(image_channels=8, pixel_channels=8, strides=(4, 8, 16, 32, 64))


def _features(h: int = 64, w: int = 96) -> Features:
    torch.manual_seed(0)
    pixel = [torch.randn(2, 8, -(-h // s), -(-w // s)) for s in SPEC.strides]
    return Features(pixel[-1], pixel, SPEC.strides, (h, w), [(h, w)] * 2)


def test_stages_per_level_and_branch_sizes() -> None:
    decoder = SemanticFPNDecoder(SPEC, {"category": 9, "style": 3}, channels=16)
    # P2: 1 conv (no upsampling); P3: 1 conv + up; P4: 2; P5: 3 (as in Semantic FPN)
    assert [len(s.convs) for s in decoder.scales] == [1, 1, 2, 3]
    out = decoder(_features())
    assert out["category"].shape == (2, 9, 64, 96) and out["style"].shape == (2, 3, 64, 96)


def test_aggregate_is_the_sum_of_level_branches() -> None:
    decoder = SemanticFPNDecoder(SPEC, {"logits": 2}, channels=8).eval()
    feats = _features()
    summed = decoder.aggregate(feats)
    by_level = [scale(x) for scale, x in zip(decoder.scales, feats.pixel[:4], strict=False)]
    assert torch.allclose(summed, sum(by_level), atol=1e-6)
    assert summed.shape == (2, 8, 16, 24)
