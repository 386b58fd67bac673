"""MaskFormer head module: sine encoding, decoder layers, output shapes, masks as dot products."""

from __future__ import annotations

import math

import pytest
import torch

from drivemtl.models.features import Features, FeatureSpec
from drivemtl.models.heads.maskformer import (
    DecoderLayer,
    MaskFormerHead,
    PixelDecoder,
    sine_position_encoding,
)

SPEC = FeatureSpec(image_channels=16, pixel_channels=8, strides=(4, 8, 16, 32))
TINY = {"num_queries": 6, "hidden_dim": 16, "nheads": 2, "dim_feedforward": 32, "dec_layers": 3,
        "mask_dim": 12, "conv_dim": 8, "dropout": 0.0}  # fmt: skip


def features(batch: int = 2, h: int = 64, w: int = 96) -> Features:
    """Random pixel features P2..P5 of a [batch, 3, h, w] input."""
    g = torch.Generator().manual_seed(0)
    pixel = [torch.randn((batch, 8, h // s, w // s), generator=g) for s in SPEC.strides]
    return Features(
        image=pixel[-1], pixel=pixel, strides=SPEC.strides, input_size=(h, w),
        image_sizes=[(h, w)] * batch,
    )  # fmt: skip


def test_sine_encoding_matches_the_formula() -> None:
    x = torch.zeros((2, 5, 3, 4))
    pos = sine_position_encoding(x, 8)
    assert pos.shape == (2, 8, 3, 4)
    half, scale, eps = 4, 2 * math.pi, 1e-6
    for y in range(3):
        for xx in range(4):
            for c in range(8):
                coord, size = (y + 1, 3) if c < half else (xx + 1, 4)
                i = c % half
                angle = coord / (size + eps) * scale / 10000 ** (2 * (i // 2) / half)
                expected = math.sin(angle) if i % 2 == 0 else math.cos(angle)
                assert float(pos[1, c, y, xx]) == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("pre_norm", [False, True])
def test_decoder_layer_is_equivariant_in_queries_and_invariant_in_memory_order(
    pre_norm: bool,
) -> None:
    torch.manual_seed(0)
    layer = DecoderLayer(16, 4, 32, 0.0, pre_norm).eval()
    tgt, query_pos = torch.randn((2, 5, 16)), torch.randn((2, 5, 16))
    memory, pos = torch.randn((2, 7, 16)), torch.randn((2, 7, 16))
    qp, mp = torch.randperm(5), torch.randperm(7)
    with torch.no_grad():
        out = layer(tgt, memory, query_pos, pos)
        again = layer(tgt[:, qp], memory[:, mp], query_pos[:, qp], pos[:, mp])
    torch.testing.assert_close(again, out[:, qp], atol=1e-5, rtol=1e-5)
    if not pre_norm:  # post-norm ends with a LayerNorm (unit affine at initialisation)
        torch.testing.assert_close(out.mean(-1), torch.zeros((2, 5)), atol=1e-5, rtol=0)
    else:  # pre-norm keeps the residual stream unnormalised
        assert float(out.mean(-1).abs().max()) > 1e-3


def test_pixel_decoder_is_top_down_at_stride_four() -> None:
    torch.manual_seed(0)
    decoder = PixelDecoder(8, 4, conv_dim=8, mask_dim=12)
    maps = features().pixel
    out = decoder(maps)
    assert out.shape == (2, 12, 16, 24)
    changed = [*maps[:-1], maps[-1] + 1.0]  # P5 reaches every stride-4 position
    assert bool(((decoder(changed) - out).abs() > 0).all())


def test_outputs_shapes_and_masks_are_embedding_dot_products() -> None:
    torch.manual_seed(0)
    head = MaskFormerHead(SPEC, num_classes=5, **TINY).eval()
    feats = features()
    with torch.no_grad():
        out = head(feats)
        pixels = head.pixel_decoder(feats.pixel)
        states = head.decoder_states(feats.pixel[-1])
    assert out.pred_logits.shape == (2, 6, 6) and out.pred_masks.shape == (2, 6, 16, 24)
    assert len(out.aux) == 2 and out.input_size == (64, 96)
    for (logits, masks), state in zip(out.layers(), states, strict=True):
        with torch.no_grad():
            torch.testing.assert_close(logits, head.class_embed(state))
            embed = head.mask_embed(state)
        for b, q, y, x in ((0, 0, 0, 0), (1, 5, 15, 23), (1, 2, 7, 11)):
            expected = sum(float(embed[b, q, c]) * float(pixels[b, c, y, x]) for c in range(12))
            assert float(masks[b, q, y, x]) == pytest.approx(expected, abs=1e-4)
    single = MaskFormerHead(SPEC, num_classes=5, **{**TINY, "deep_supervision": False})
    assert single(feats).aux == []


def test_bad_configurations_fail_with_a_message() -> None:
    with pytest.raises(ValueError, match=r"strides \[64\]"):
        MaskFormerHead(SPEC, num_classes=3, strides=(4, 8, 16, 64))
    with pytest.raises(ValueError, match="divisible by nheads"):
        MaskFormerHead(SPEC, num_classes=3, hidden_dim=18, nheads=4)
