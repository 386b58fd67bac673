import pytest
import torch
import torch.nn.functional as F

from drivemtl.config.base import build_plugin
from drivemtl.models.backbones import ResNet
from drivemtl.models.necks import FPN, NECKS


@pytest.mark.parametrize("norm", ["gn", None])
@pytest.mark.parametrize("size", [(360, 640), (375, 1242)])
def test_backbone_fpn_shapes_on_odd_sizes(norm, size):
    backbone = ResNet(18, width=8).eval()
    spec = {"type": "fpn", "out_channels": 16, "norm": norm or "none"}
    neck = build_plugin(NECKS, spec, backbone.out_channels).eval()
    with torch.no_grad():
        pyramid = neck(backbone(torch.randn(1, 3, *size)))
    assert neck.strides == [4, 8, 16, 32, 64] and neck.out_channels == 16
    assert len(pyramid) == 5
    h, w = size
    for level, p in enumerate(pyramid, start=2):
        # Each level is at most one pixel larger than size / stride (ceil of repeated halving).
        assert p.shape[:2] == (1, 16)
        assert abs(p.shape[2] - h / 2**level) < 1 and abs(p.shape[3] - w / 2**level) < 1
    assert pyramid[4].shape[-2:] == (
        (pyramid[3].shape[2] + 1) // 2,
        (pyramid[3].shape[3] + 1) // 2,
    )


def test_fpn_top_down_arithmetic_with_identity_weights():
    # Lateral 1x1 = identity, output 3x3 = centre-only identity: P_l = C_l + up(P_{l+1}).
    neck = FPN([2, 2, 2], out_channels=2, norm=None, extra_p6=True)
    eye = torch.eye(2)
    for conv in neck.lateral_convs:
        conv[0].weight.data = eye.view(2, 2, 1, 1).clone()
        conv[0].bias.data.zero_()
    for conv in neck.output_convs:
        weight = torch.zeros(2, 2, 3, 3)
        weight[:, :, 1, 1] = eye
        conv[0].weight.data = weight
        conv[0].bias.data.zero_()
    gen = torch.Generator().manual_seed(0)
    c3, c4, c5 = (torch.randn(1, 2, s, s + 1, generator=gen) for s in (9, 5, 3))
    p3, p4, p5, p6 = neck([c3, c4, c5])
    assert neck.in_levels == [3, 4, 5] and neck.strides == [8, 16, 32, 64]
    assert torch.allclose(p5, c5)
    assert torch.allclose(p4, c4 + F.interpolate(c5, size=c4.shape[-2:], mode="nearest"))
    assert torch.allclose(p3, c3 + F.interpolate(p4, size=c3.shape[-2:], mode="nearest"))
    assert torch.equal(p6, p5[..., ::2, ::2])


def test_fpn_rejects_bad_configuration():
    with pytest.raises(ValueError, match="norm"):
        FPN([8, 16], norm="bn")
    with pytest.raises(ValueError, match="consecutive"):
        FPN([8, 16], in_levels=(2, 4))
    with pytest.raises(ValueError, match="expects 2 feature maps"):
        FPN([8, 16], out_channels=4)([torch.zeros(1, 8, 4, 4)])
    assert FPN([8, 16], norm="none", extra_p6=False).strides == [16, 32]
