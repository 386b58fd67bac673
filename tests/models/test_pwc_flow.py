"""The PWC-style flow decoder: one level's warping + cost volume against a float64 loop
reference, flow upsampling, and the shapes of the coarse-to-fine outputs."""

from __future__ import annotations

import math

import pytest
import torch

from drivemtl.models.features import Features, FeatureSpec
from drivemtl.models.heads.pwc_flow import PWCFlowHead, level_cost, upsample_flow

SPEC = FeatureSpec(image_channels=8, pixel_channels=6, strides=(4, 8, 16, 32))
TINY = {"decoder_widths": (8, 4), "context_widths": (6, 4), "context_dilations": (1, 2)}


def _bilinear(x: torch.Tensor, px: float, py: float) -> torch.Tensor:
    """x [C, H, W] at (px, py) with zeros outside, by the four-neighbour formula."""
    _, h, w = x.shape
    x0, y0 = math.floor(px), math.floor(py)
    out = torch.zeros(x.shape[0], dtype=x.dtype)
    for xi in (x0, x0 + 1):
        for yi in (y0, y0 + 1):
            if 0 <= xi < w and 0 <= yi < h:
                out += (1 - abs(px - xi)) * (1 - abs(py - yi)) * x[:, yi, xi]
    return out


def _loop_cost(key, ref, flow, d):
    b, _, h, w = key.shape
    warped = torch.zeros_like(ref)
    for n in range(b):
        for y in range(h):
            for x in range(w):
                fx, fy = float(flow[n, 0, y, x]), float(flow[n, 1, y, x])
                warped[n, :, y, x] = _bilinear(ref[n], x + fx, y + fy)

    def unit(v):
        norm = v.norm()
        return v / norm if norm > 1e-12 else v * 0

    size = 2 * d + 1
    out = torch.zeros(b, size * size, h, w, dtype=key.dtype)
    for n in range(b):
        for y in range(h):
            for x in range(w):
                k = unit(key[n, :, y, x])
                for i, dy in enumerate(range(-d, d + 1)):
                    for j, dx in enumerate(range(-d, d + 1)):
                        if 0 <= y + dy < h and 0 <= x + dx < w:
                            out[n, i * size + j, y, x] = k @ unit(warped[n, :, y + dy, x + dx])
    return out


def test_level_cost_equals_a_loop_reference() -> None:
    g = torch.Generator().manual_seed(0)
    key = torch.randn(2, 5, 6, 7, generator=g, dtype=torch.float64)
    ref = torch.randn(2, 5, 6, 7, generator=g, dtype=torch.float64)
    flow = 1.5 * torch.randn(2, 2, 6, 7, generator=g, dtype=torch.float64)
    got = level_cost(key, ref, flow, 2)
    assert got.shape == (2, 25, 6, 7)
    torch.testing.assert_close(got, _loop_cost(key, ref, flow, 2), atol=1e-9, rtol=1e-9)
    # Zero flow, same maps: the centre displacement is cosine 1 everywhere.
    same = level_cost(key, key, torch.zeros_like(flow), 4)
    assert same.shape[1] == 81
    torch.testing.assert_close(same[:, 40], torch.ones(2, 6, 7, dtype=torch.float64))


def test_upsample_flow_scales_the_vectors() -> None:
    flow = torch.stack((torch.full((3, 4), 1.0), torch.full((3, 4), -2.0)))[None]
    up = upsample_flow(flow, (6, 12))
    assert up.shape == (1, 2, 6, 12)
    torch.testing.assert_close(up[0, 0], torch.full((6, 12), 3.0))
    torch.testing.assert_close(up[0, 1], torch.full((6, 12), -4.0))
    assert upsample_flow(flow, (3, 4)) is flow


def _features(batch: int, reference: bool) -> Features:
    g = torch.Generator().manual_seed(1)

    def maps():
        return [torch.randn(batch, 6, 64 // s, 96 // s, generator=g) for s in SPEC.strides]

    pixel = maps()
    feats = Features(image=pixel[-1], pixel=pixel, strides=SPEC.strides, input_size=(64, 96),
                     image_sizes=[(64, 96)] * batch)  # fmt: skip
    if reference:
        ref = maps()
        feats.reference = Features(image=ref[-1], pixel=ref, strides=SPEC.strides,
                                   input_size=(64, 96), image_sizes=[(64, 96)] * batch)  # fmt: skip
    return feats


def test_the_decoder_goes_coarse_to_fine_in_both_directions() -> None:
    head = PWCFlowHead(SPEC, strides=(32, 16, 8, 4), **TINY)
    assert head.decoders[0].convs[0][0].in_channels == 81 + 6 + 2
    out = head(_features(2, True), batch=object())  # any batch: training outputs
    assert out.strides == (32, 16, 8, 4) and out.input_size == (64, 96)
    shapes = [tuple(f.shape) for f in out.forward]
    assert shapes == [(2, 2, 2, 3), (2, 2, 4, 6), (2, 2, 8, 12), (2, 2, 16, 24)]
    assert [tuple(f.shape) for f in out.backward] == shapes
    assert out.finest is out.forward[-1]
    # Inference: forward flow only, the same as the training pass's forward half.
    inference = head(_features(2, True))
    assert inference.backward is None
    torch.testing.assert_close(inference.finest, out.finest)
    # Swapping the frames turns the forward pass into the backward one.
    swapped = _features(2, True)
    swapped.pixel, swapped.reference.pixel = swapped.reference.pixel, swapped.pixel
    torch.testing.assert_close(head(swapped).finest, out.backward[-1])
    assert head(_features(2, False)).forward is None


def test_a_subset_of_levels_and_bad_levels() -> None:
    head = PWCFlowHead(SPEC, strides=(16, 8), **TINY)
    out = head(_features(1, True))
    assert [tuple(f.shape[-2:]) for f in out.forward] == [(4, 6), (8, 12)]
    for bad in ((4, 8), (32, 2), (8, 8)):
        with pytest.raises(ValueError, match="coarse to fine"):
            PWCFlowHead(SPEC, strides=bad, **TINY)
