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


def _deform_twin(channels: int = 8, shared_convs: int = 1, branch_convs: int = 1):
    """A plain and a deformable decoder (float64) with equal weights: each DCN's main weight is
    the plain 3x3 conv's, the GroupNorms and 1x1 convs are copied, the offset convs stay zero."""
    from drivemtl.ops.deform_conv import DeformConv2dPack

    kwargs = {"channels": channels, "shared_convs": shared_convs, "branch_convs": branch_convs}
    torch.manual_seed(0)
    plain = SemanticFPNDecoder(SPEC, {"logits": 3}, **kwargs).double()
    deform = SemanticFPNDecoder(SPEC, {"logits": 3}, conv="deform", **kwargs).double()
    packs = [m for m in deform.modules() if isinstance(m, DeformConv2dPack)]
    convs = [
        m for m in plain.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3)
    ]
    # scales (1 + 1 + 2 + 3 convs) + trunk + branch
    assert len(packs) == len(convs) == 7 + shared_convs + branch_convs
    for pack, conv in zip(packs, convs, strict=True):
        pack.weight.data.copy_(conv.weight.data)
    state = plain.state_dict()
    for name, value in deform.state_dict().items():
        if name in state and state[name].shape == value.shape and "conv_offset" not in name:
            value.copy_(state[name])
    return plain, deform, packs


def _features64(h: int = 32, w: int = 48) -> Features:
    torch.manual_seed(1)
    pixel = [torch.randn(2, 8, -(-h // s), -(-w // s), dtype=torch.float64) for s in SPEC.strides]
    return Features(pixel[-1], pixel, SPEC.strides, (h, w), [(h, w)] * 2)


def test_deformable_decoder_with_zero_offsets_and_unit_mask_is_the_plain_one() -> None:
    """Offsets 0 and mask 1 (mask logits +40: sigmoid is exactly 1.0 in float64) sample the
    regular grid: every layer, and so the whole decoder, equals the plain path."""
    plain, deform, packs = _deform_twin()
    taps = 9
    for pack in packs:
        assert torch.count_nonzero(pack.conv_offset.weight) == 0  # DCNv2's zero init
        pack.conv_offset.bias.data[2 * taps :] = 40.0
    feats = _features64()
    expected, got = plain(feats)["logits"], deform(feats)["logits"]
    assert torch.allclose(got, expected, atol=1e-10, rtol=0)


def test_deformable_block_at_init_equals_the_plain_block_through_group_norm() -> None:
    """At DCNv2's init the mask is 0.5: the conv is 0.5 x the plain one, which the following
    GroupNorm cancels (up to its eps), so the decoder starts as the plain decoder."""
    plain, deform, packs = _deform_twin()
    feats = _features64(64, 96)
    x = feats.pixel[0]
    half = packs[0](x)
    assert torch.allclose(half, 0.5 * plain.scales[0].convs[0][0](x), atol=1e-12)
    assert torch.allclose(deform(feats)["logits"], plain(feats)["logits"], atol=2e-3)


def test_deformable_decoder_trains_its_offsets_on_cpu() -> None:
    """A tiny forward + backward: the loss reaches the offset / mask conv of every layer."""
    _, deform, packs = _deform_twin(channels=8, shared_convs=1, branch_convs=0)
    out = deform.float()(_features(32, 48))
    assert out["logits"].shape == (2, 3, 32, 48)
    out["logits"].square().mean().backward()
    for pack in packs[-1:] + packs[:1]:
        grad = pack.conv_offset.weight.grad
        assert grad is not None and float(grad.abs().sum()) > 0
        assert float(pack.conv_offset.weight.grad[:18].abs().sum()) > 0  # offsets, not only mask


def test_shared_convs_are_the_task_features_and_conv_is_validated() -> None:
    import pytest

    decoder = SemanticFPNDecoder(SPEC, {"a": 2, "b": 3}, channels=8, shared_convs=2)
    feats = _features()
    shared = decoder.decode(feats)
    assert decoder.out_channels == 8 and shared.shape == (2, 8, 16, 24)
    assert len(decoder.trunk) == 2 and len(decoder.branches["a"]) == 1
    assert torch.equal(shared, decoder.trunk(decoder.aggregate(feats)))
    with pytest.raises(ValueError, match="conv 'dcn'"):
        SemanticFPNDecoder(SPEC, {"a": 2}, conv="dcn")  # type: ignore[arg-type]
