import pytest
import torch
import torch.nn.functional as F

from drivemtl.config.base import build_plugin
from drivemtl.models.backbones import BACKBONES, FrozenBatchNorm2d, ResNet
from drivemtl.models.weights import load_weights

# torchvision's architecture table: blocks per stage, and whether blocks are bottlenecks.
TORCHVISION_LAYOUT = {
    18: ((2, 2, 2, 2), False),
    34: ((3, 4, 6, 3), False),
    50: ((3, 4, 6, 3), True),
    101: ((3, 4, 23, 3), True),
}
# Number of entries in torchvision's resnetXX().state_dict(), classifier included.
TORCHVISION_KEY_COUNT = {18: 122, 34: 218, 50: 320, 101: 626}


def torchvision_state_shapes(depth: int) -> dict[str, tuple[int, ...]]:
    """Key -> shape of torchvision's ResNet state dict, written out from its naming scheme."""
    blocks, bottleneck = TORCHVISION_LAYOUT[depth]
    shapes: dict[str, tuple[int, ...]] = {}

    def bn(name: str, ch: int) -> None:
        for part in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"{name}.{part}"] = (ch,)
        shapes[f"{name}.num_batches_tracked"] = ()

    shapes["conv1.weight"] = (64, 3, 7, 7)
    bn("bn1", 64)
    in_ch = 64
    for stage, count in enumerate(blocks):
        planes = 64 * 2**stage
        out_ch = planes * (4 if bottleneck else 1)
        for b in range(count):
            p = f"layer{stage + 1}.{b}"
            src = in_ch if b == 0 else out_ch
            if bottleneck:
                shapes[f"{p}.conv1.weight"] = (planes, src, 1, 1)
                shapes[f"{p}.conv2.weight"] = (planes, planes, 3, 3)
                shapes[f"{p}.conv3.weight"] = (out_ch, planes, 1, 1)
                bn(f"{p}.bn1", planes)
                bn(f"{p}.bn2", planes)
                bn(f"{p}.bn3", out_ch)
            else:
                shapes[f"{p}.conv1.weight"] = (planes, src, 3, 3)
                shapes[f"{p}.conv2.weight"] = (planes, planes, 3, 3)
                bn(f"{p}.bn1", planes)
                bn(f"{p}.bn2", planes)
            if b == 0 and (stage > 0 or src != out_ch):
                shapes[f"{p}.downsample.0.weight"] = (out_ch, src, 1, 1)
                bn(f"{p}.downsample.1", out_ch)
        in_ch = out_ch
    shapes["fc.weight"] = (1000, in_ch)
    shapes["fc.bias"] = (1000,)
    return shapes


@pytest.mark.parametrize("depth", [18, 34, 50, 101])
def test_state_dict_matches_torchvision_layout(depth):
    expected = torchvision_state_shapes(depth)
    assert len(expected) == TORCHVISION_KEY_COUNT[depth]
    with torch.device("meta"):  # shapes only: no memory, no initialisation cost
        model = build_plugin(BACKBONES, {"type": f"resnet{depth}"})
    ours = {key: tuple(value.shape) for key, value in model.state_dict().items()}
    without_fc = {k: v for k, v in expected.items() if not k.startswith("fc.")}
    assert ours == without_fc


@pytest.mark.parametrize("norm", ["bn", "frozen_bn"])
def test_imagenet_style_checkpoint_loads_strictly(tmp_path, norm):
    gen = torch.Generator().manual_seed(0)
    shapes = torchvision_state_shapes(18)
    checkpoint = {}
    for key, shape in shapes.items():
        if key.endswith("num_batches_tracked"):
            checkpoint[key] = torch.tensor(7)
        elif key.endswith("running_var"):
            checkpoint[key] = torch.rand(shape, generator=gen) + 0.5
        else:
            checkpoint[key] = torch.randn(shape, generator=gen)
    path = tmp_path / "resnet18-imagenet.pth"
    torch.save(checkpoint, path)
    model = ResNet(18, norm=norm)
    report = load_weights(model, path, strict=True)  # the classifier fc.* is dropped by default
    assert report.ok and sorted(report.dropped) == ["fc.bias", "fc.weight"]
    state = model.state_dict()
    assert torch.equal(
        state["layer3.0.downsample.0.weight"], checkpoint["layer3.0.downsample.0.weight"]
    )
    assert torch.equal(state["layer4.1.bn2.running_var"], checkpoint["layer4.1.bn2.running_var"])
    # A prefixed checkpoint (e.g. a detector's "backbone.body.") loads through prefix_map.
    prefixed = {f"backbone.body.{k}": v for k, v in checkpoint.items()}
    torch.save(prefixed, tmp_path / "detector.pth")
    with pytest.raises(ValueError, match=r"unexpected in checkpoint: backbone\.body\.conv1"):
        load_weights(ResNet(18, norm=norm), tmp_path / "detector.pth", strict=True)
    assert load_weights(ResNet(18, norm=norm), tmp_path / "detector.pth", {"backbone.body.": ""}).ok
    # Old torchvision checkpoints (2017) carry no num_batches_tracked: still a strict load.
    legacy = {k: v for k, v in checkpoint.items() if not k.endswith("num_batches_tracked")}
    torch.save(legacy, tmp_path / "legacy.pth")
    assert load_weights(ResNet(18, norm=norm), tmp_path / "legacy.pth").ok


def test_frozen_batchnorm_equals_batchnorm_in_eval():
    gen = torch.Generator().manual_seed(1)
    bn = torch.nn.BatchNorm2d(5).eval()
    bn.weight.data = torch.randn(5, generator=gen)
    bn.bias.data = torch.randn(5, generator=gen)
    bn.running_mean = torch.randn(5, generator=gen)
    bn.running_var = torch.rand(5, generator=gen) + 0.1
    frozen = FrozenBatchNorm2d(5)
    frozen.load_state_dict(bn.state_dict())
    x = torch.randn(2, 5, 3, 4, generator=gen)
    assert torch.allclose(frozen(x), bn(x), atol=1e-6)
    assert not any(p.requires_grad for p in frozen.parameters())


@pytest.mark.parametrize("size", [(360, 640), (375, 1242), (97, 131)])
def test_output_shapes_for_odd_sizes(size):
    model = ResNet(18, width=8).eval()
    height, width = size
    with torch.no_grad():
        outputs = model(torch.randn(1, 3, height, width))
    assert model.strides == [4, 8, 16, 32]
    assert model.out_channels == [8, 16, 32, 64]
    expected_h = [((height + 1) // 2 + 1) // 2]
    expected_w = [((width + 1) // 2 + 1) // 2]
    for _ in range(3):
        expected_h.append((expected_h[-1] + 1) // 2)
        expected_w.append((expected_w[-1] + 1) // 2)
    for out, channels, h, w in zip(
        outputs, model.out_channels, expected_h, expected_w, strict=True
    ):
        assert tuple(out.shape) == (1, channels, h, w)


def test_out_levels_width_and_bottleneck_channels():
    model = ResNet(50, out_levels=(3, 5), width=16)
    assert model.out_channels == [128, 512] and model.strides == [8, 32]
    outputs = model(torch.randn(2, 3, 64, 64))
    assert [tuple(o.shape) for o in outputs] == [(2, 128, 8, 8), (2, 512, 2, 2)]
    with pytest.raises(ValueError, match="out_levels"):
        ResNet(18, out_levels=(5, 3))
    with pytest.raises(KeyError, match="resnet18"):
        BACKBONES.get("resnet19")


def test_frozen_stages_fix_parameters_and_statistics():
    model = ResNet(18, width=8, frozen_stages=1).train()
    frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
    assert frozen and all(n.startswith(("conv1", "bn1", "layer1.")) for n in frozen)
    assert all(p.requires_grad for n, p in model.named_parameters() if n.startswith("layer2."))
    before = model.layer1[0].bn1.running_mean.clone()
    trainable_before = model.layer2[0].bn1.running_mean.clone()
    model(torch.randn(2, 3, 32, 32) * 3 + 1)
    assert torch.equal(model.layer1[0].bn1.running_mean, before)  # frozen stage stays in eval
    assert not torch.equal(model.layer2[0].bn1.running_mean, trainable_before)
    assert not model.bn1.training and model.layer2.training


# --- dilation: output stride 16 (torchvision's replace_stride_with_dilation=[F, F, True]) ------


@pytest.mark.parametrize("depth", [18, 101])
def test_dilation_keeps_torchvision_names_and_shapes(depth):
    with torch.device("meta"):
        plain = ResNet(depth)
        dilated = ResNet(depth, dilation=True)
    shapes = {k: tuple(v.shape) for k, v in dilated.state_dict().items()}
    assert shapes == {k: tuple(v.shape) for k, v in plain.state_dict().items()}
    expected = torchvision_state_shapes(depth)
    assert shapes == {k: v for k, v in expected.items() if not k.startswith("fc.")}


@pytest.mark.parametrize("depth", [18, 50])
def test_dilation_puts_c5_at_stride_16(depth):
    model = ResNet(depth, width=8, dilation=True).eval()
    assert model.strides == [4, 8, 16, 16]
    assert model.out_channels == ResNet(depth, width=8).out_channels
    with torch.no_grad():
        c2, c3, c4, c5 = model(torch.randn(1, 3, 64, 96))
    assert [tuple(c.shape[-2:]) for c in (c2, c3, c4, c5)] == [(16, 24), (8, 12), (4, 6), (4, 6)]


def _convs(module: torch.nn.Module) -> dict[str, torch.nn.Conv2d]:
    return {n: m for n, m in module.named_modules() if isinstance(m, torch.nn.Conv2d)}


def test_dilation_rule_of_layer4_convolutions():
    with torch.device("meta"):
        bottleneck = ResNet(101, dilation=True)
        basic = ResNet(18, dilation=True)
    for name, conv in _convs(bottleneck).items():
        if not name.startswith("layer4."):
            assert conv.dilation == (1, 1), name
    layer4 = bottleneck.layer4
    # torchvision: the first block keeps the previous dilation (1) and loses its stride ...
    assert layer4[0].conv2.stride == (1, 1) and layer4[0].conv2.dilation == (1, 1)
    assert layer4[0].conv2.padding == (1, 1) and layer4[0].downsample[0].stride == (1, 1)
    # ... every later 3x3 convolution is dilated by 2 with padding 2; 1x1 convs are untouched.
    for block in list(layer4)[1:]:
        assert block.conv2.dilation == (2, 2) and block.conv2.padding == (2, 2)
        assert block.conv1.dilation == (1, 1) and block.conv3.dilation == (1, 1)
    block = basic.layer4[1]
    for conv in (block.conv1, block.conv2):
        assert conv.dilation == (2, 2) and conv.padding == (2, 2) and conv.stride == (1, 1)
    assert basic.layer4[0].conv1.stride == (1, 1) and basic.layer4[0].conv1.dilation == (1, 1)


def _holes(weight: torch.Tensor, rate: int) -> torch.Tensor:
    """A k x k kernel spread to a (rate (k - 1) + 1)^2 kernel with zeros between the taps."""
    out_ch, in_ch, k, _ = weight.shape
    size = rate * (k - 1) + 1
    spread = torch.zeros(out_ch, in_ch, size, size)
    spread[:, :, ::rate, ::rate] = weight
    return spread


def _bn(x: torch.Tensor, bn: torch.nn.BatchNorm2d) -> torch.Tensor:
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    return (x - bn.running_mean.view(1, -1, 1, 1)) * scale.view(1, -1, 1, 1) + bn.bias.view(
        1, -1, 1, 1
    )


def test_dilated_bottleneck_block_equals_convolution_with_holes():
    torch.manual_seed(0)
    model = ResNet(50, width=8, dilation=True).eval()
    block = model.layer4[1]
    for bn in (block.bn1, block.bn2, block.bn3):
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 1.5)
        bn.weight.data.uniform_(0.5, 1.5)
        bn.bias.data.uniform_(-0.2, 0.2)
    x = torch.randn(2, block.conv1.in_channels, 7, 9)
    with torch.no_grad():
        reduced = F.relu(_bn(F.conv2d(x, block.conv1.weight), block.bn1))
        dilated = F.conv2d(reduced, block.conv2.weight, padding=2, dilation=2)
        holes = F.conv2d(reduced, _holes(block.conv2.weight, 2), padding=2)
        y = _bn(F.conv2d(F.relu(_bn(holes, block.bn2)), block.conv3.weight), block.bn3)
        assert torch.allclose(block(x), F.relu(y + x), atol=1e-5)
        assert torch.allclose(block.conv2(reduced), dilated, atol=1e-5)
        undilated = F.conv2d(reduced, block.conv2.weight, padding=1)
    assert not torch.allclose(dilated, undilated, atol=1e-3)  # the check tells them apart
