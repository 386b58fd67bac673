"""ASPP + skip decoder (DenseMTL): ASPP branches, block sizes and upsampling, the head split."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from drivemtl.models.backbones import ResNet
from drivemtl.models.features import Features
from drivemtl.models.heads.aspp_decoder import ASPP, ASPPSkipDecoder, DecoderBlock

RATES = (6, 12, 18)


def _randomise_bn(module: torch.nn.Module, seed: int = 0) -> None:
    """Non-trivial BatchNorm statistics and affine parameters, so that eval-mode BN matters."""
    g = torch.Generator().manual_seed(seed)
    for bn in module.modules():
        if isinstance(bn, torch.nn.BatchNorm2d):
            n = bn.num_features
            bn.running_mean.copy_(torch.rand(n, generator=g) - 0.5)
            bn.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            bn.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            bn.bias.data.copy_(torch.rand(n, generator=g) - 0.5)


def _bn(x: Tensor, bn: torch.nn.BatchNorm2d) -> Tensor:
    shape = (1, -1, 1, 1)
    scale = (bn.weight / torch.sqrt(bn.running_var + bn.eps)).view(shape)
    return (x - bn.running_mean.view(shape)) * scale + bn.bias.view(shape)


def test_aspp_branches_are_dilated_convolutions_at_their_rates() -> None:
    torch.manual_seed(0)
    aspp = ASPP(6, 5, rates=RATES, norm="bn").eval()
    _randomise_bn(aspp)
    x = torch.randn(2, 6, 21, 25)  # larger than the rates: every tap of rate 18 reaches pixels
    with torch.no_grad():
        maps = aspp.branch_maps(x)
        conv0, bn0 = aspp.branches[0][0], aspp.branches[0][1]
        assert torch.allclose(maps[0], F.relu(_bn(F.conv2d(x, conv0.weight), bn0)), atol=1e-5)
        for branch, rate, out in zip(aspp.branches[1:], RATES, maps[1:4], strict=True):
            conv, bn = branch[0], branch[1]
            assert conv.dilation == (rate, rate) and conv.padding == (rate, rate)
            ref = F.relu(_bn(F.conv2d(x, conv.weight, padding=rate, dilation=rate), bn))
            assert torch.allclose(out, ref, atol=1e-5)
            plain = F.relu(_bn(F.conv2d(x, conv.weight, padding=1), bn))
            assert not torch.allclose(out, plain, atol=1e-3)  # the rate changes the result


def test_image_pooling_branch_is_the_projected_mean_broadcast() -> None:
    torch.manual_seed(1)
    aspp = ASPP(4, 3, rates=RATES, norm="bn").eval()
    _randomise_bn(aspp, seed=1)
    x = torch.randn(2, 4, 9, 11)
    conv, bn = aspp.pooling[1][0], aspp.pooling[1][1]
    with torch.no_grad():
        pooled = aspp.branch_maps(x)[-1]
        mean = x.mean(dim=(2, 3))  # [2, 4]
        value = (mean @ conv.weight[:, :, 0, 0].T - bn.running_mean) / torch.sqrt(
            bn.running_var + bn.eps
        ) * bn.weight + bn.bias
        expected = value.clamp(min=0)[:, :, None, None].expand(-1, -1, 9, 11)
    assert pooled.shape == (2, 3, 9, 11)
    assert torch.allclose(pooled, expected, atol=1e-5)


def test_aspp_projects_the_five_branches_with_dropout_in_training() -> None:
    torch.manual_seed(2)
    aspp = ASPP(4, 3, rates=RATES, norm="none", dropout=0.5)
    assert len(aspp.branch_maps(torch.randn(1, 4, 5, 5))) == 5  # 1x1, 3 rates, pooling
    x = torch.randn(2, 4, 8, 8)
    project = aspp.project[0].weight[:, :, 0, 0]  # [3, 15]
    with torch.no_grad():
        aspp.eval()
        stacked = torch.cat(aspp.branch_maps(x), dim=1)
        expected = torch.einsum("oc,bchw->bohw", project, stacked).clamp(min=0)
        assert torch.allclose(aspp(x), expected, atol=1e-5)
        aspp.train()
        dropped = aspp(x)
    kept = dropped != 0
    assert torch.allclose(dropped[kept], 2 * expected[kept], atol=1e-5)  # inverted dropout
    positive = expected > 0
    assert positive.sum() > 50 and 0.3 < 1 - kept[positive].float().mean() < 0.7
    assert not ASPP(4, 3, pooling=False).pooling and len(ASPP(4, 3, rates=(2,)).branches) == 2


def test_decoder_block_upsamples_nearest_then_concatenates_the_skip() -> None:
    torch.manual_seed(3)
    block = DecoderBlock(torch.nn.Identity(), 3, 2, 4)
    x, skip = torch.randn(1, 3, 4, 5), torch.randn(1, 2, 8, 10)
    up = x.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)
    padded = F.pad(torch.cat((up, skip), dim=1), (1, 1, 1, 1), mode="reflect")
    conv = block.fuse[0]
    expected = F.elu(F.conv2d(padded, conv.weight, conv.bias))
    assert torch.allclose(block(x, (8, 10), skip), expected, atol=1e-5)
    same = block.fuse(torch.cat((x, skip[..., :4, :5]), dim=1))  # equal sizes: no upsampling
    assert torch.allclose(block(x, (4, 5), skip[..., :4, :5]), same, atol=1e-6)


def _features(backbone: ResNet, h: int = 64, w: int = 96, batch: int = 2) -> Features:
    torch.manual_seed(4)
    with torch.no_grad():
        maps = backbone.eval()(torch.randn(batch, 3, h, w))
    return Features(maps[-1], [], (), (h, w), [(h, w)] * batch, backbone=maps)


def _decoder(backbone: ResNet, **kwargs: object) -> ASPPSkipDecoder:
    channels = backbone.out_channels
    options = {"channels": (12, 10, 8, 6, 4), "aspp_channels": 12, "aspp_norm": "gn", **kwargs}
    return ASPPSkipDecoder(
        channels[-1],
        dict(zip((2, 3, 4), channels[:3], strict=True)),
        {"logits": 3, "aux": 2},
        name="t",
        **options,
    ).eval()


@pytest.mark.parametrize("dilation", [False, True])
@pytest.mark.parametrize("size", [(64, 96), (70, 90)])
def test_every_scale_has_its_size_and_width(dilation: bool, size: tuple[int, int]) -> None:
    backbone = ResNet(18, width=8, dilation=dilation)
    decoder = _decoder(backbone, supervised_scales=(0, 1, 2, 3, 4))
    features = _features(backbone, *size)
    h, w = size
    x = features.backbone[-1]
    for s in range(4, -1, -1):
        x = decoder.run_block(s, x, features)
        expected = (-(-h // 2**s), -(-w // 2**s))
        assert tuple(x.shape) == (2, (12, 10, 8, 6, 4)[4 - s], *expected), s
    out = decoder(features, batch=object())
    assert set(out) == {"logits", "aux"} and out["logits"].shape == (2, 3, h, w)
    assert sorted(out.side) == [1, 2, 3, 4]
    for s, maps in out.side.items():
        assert maps["aux"].shape == (2, 2, -(-h // 2**s), -(-w // 2**s))


def test_top_block_upsamples_only_when_c5_is_coarser() -> None:
    for dilation, c5 in ((True, (4, 6)), (False, (2, 3))):
        backbone = ResNet(18, width=8, dilation=dilation)
        features = _features(backbone)
        assert tuple(features.backbone[-1].shape[-2:]) == c5
        decoder = _decoder(backbone)
        block = decoder.blocks["4"]
        with torch.no_grad():
            aspp = decoder.aspp(features.backbone[-1])
            up = F.interpolate(aspp, size=(4, 6), mode="nearest")
            expected = block.fuse(torch.cat((up, features.backbone[2]), dim=1))
            assert torch.allclose(decoder.run_block(4, features.backbone[-1], features), expected)


def test_split_and_side_outputs_only_with_targets() -> None:
    backbone = ResNet(18, width=8, dilation=True)
    features = _features(backbone)
    decoder = _decoder(backbone)
    assert decoder.predictor_modules == ("blocks.0", "sides.0")
    shared = decoder.decode(features, batch=None)
    assert decoder.out_channels == 6 and shared.shape == (2, 6, 32, 48)  # scale 1
    assert decoder.predict(shared, features, batch=None).side == {}
    with torch.no_grad():
        out = decoder(features, batch=object())
        scale1 = decoder.decode(features, batch=None)
        assert torch.allclose(out.side[1]["logits"], decoder.sides["1"]["logits"](scale1))
        final = decoder.sides["0"]["logits"](decoder.run_block(0, scale1, features))
        assert torch.allclose(out["logits"], final)
    assert sorted(decoder.sides) == ["0", "1"]  # side convs only where they are trained
    late = _decoder(backbone, exchange_scale=0)
    assert late.predictor_modules == ("sides.0",) and late.out_channels == 4
    early = _decoder(backbone, exchange_scale=3, supervised_scales=(0, 2))
    assert early.predictor_modules == ("blocks.0", "blocks.1", "blocks.2", "sides.0", "sides.2")


def test_three_by_three_side_convs_and_bad_settings() -> None:
    backbone = ResNet(18, width=8)
    assert _decoder(backbone, side_kernel=3).sides["0"]["aux"].kernel_size == (3, 3)
    assert _decoder(backbone).sides["0"]["aux"].kernel_size == (1, 1)
    with pytest.raises(ValueError, match="exchange_scale"):
        _decoder(backbone, exchange_scale=5)
    with pytest.raises(ValueError, match="supervised_scales"):
        _decoder(backbone, supervised_scales=(0, 7))
    wrong = ASPPSkipDecoder(
        64, {2: 9, 3: 16, 4: 32}, {"x": 1}, channels=(8, 8, 8, 8, 8), aspp_channels=8
    )
    with pytest.raises(ValueError, match=r"C2 has 8 channels.*skip_channels"):
        wrong(_features(backbone), None)
