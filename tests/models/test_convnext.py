"""ConvNeXt backbones: computations against float64 references, and both checkpoint layouts.

The references are written from the architecture description (Liu et al. 2022), not from the
module: an explicit per-pixel normalisation, a hand-computed block, and the key / shape layout of
the official (facebookresearch) and timm checkpoints with a mapping between them built here.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from batches import make_batch, tiny_config
from safetensors.torch import save_file
from torch import Tensor

from drivemtl.config.base import build_plugin
from drivemtl.models import build_model
from drivemtl.models.backbones import BACKBONES, ConvNeXt, ResNet
from drivemtl.models.backbones.convnext import ConvNeXtBlock, LayerNorm2d
from drivemtl.models.config import ModelConfig
from drivemtl.models.weights import WeightsError

DEPTHS = (1, 2, 1, 1)  # two blocks in stage 2 to exercise block indices
DIMS = (8, 16, 32, 64)
NARROW = {"depths": [1, 1, 1, 1], "dims": list(DIMS)}


def convnext(type_: str = "convnext_t", **options) -> ConvNeXt:
    return build_plugin(BACKBONES, {"type": type_, **options})


# --- float64 references -----------------------------------------------------------------------


def reference_channel_norm(x: Tensor, weight: Tensor, bias: Tensor, eps: float) -> Tensor:
    """Per pixel of [N, C, H, W]: (x - mean_C) / sqrt(biased var_C + eps) * w + b."""
    n, c, h, w = x.shape
    out = torch.empty_like(x)
    for i in range(n):
        for y in range(h):
            for z in range(w):
                v = x[i, :, y, z]
                mean = v.sum() / c
                var = ((v - mean) ** 2).sum() / c
                out[i, :, y, z] = (v - mean) / torch.sqrt(var + eps) * weight + bias
    return out


def test_layer_norm_2d_normalises_over_channels_per_pixel() -> None:
    g = torch.Generator().manual_seed(0)
    norm = LayerNorm2d(5).double()
    with torch.no_grad():
        norm.weight.copy_(torch.randn(5, generator=g, dtype=torch.float64))
        norm.bias.copy_(torch.randn(5, generator=g, dtype=torch.float64))
    x = torch.randn(2, 5, 3, 4, generator=g, dtype=torch.float64) * 3 + 1
    expected = reference_channel_norm(x, norm.weight.detach(), norm.bias.detach(), 1e-6)
    assert norm.eps == 1e-6
    torch.testing.assert_close(norm(x), expected, rtol=1e-12, atol=1e-12)


def test_block_matches_an_explicit_float64_computation() -> None:
    g = torch.Generator().manual_seed(1)
    c = 6
    block = ConvNeXtBlock(c).double().eval()
    with torch.no_grad():
        for parameter in block.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=g, dtype=torch.float64) * 0.3)
    x = torch.randn(2, c, 9, 8, generator=g, dtype=torch.float64)
    p = {k: v.detach() for k, v in block.named_parameters()}
    assert p["dwconv.weight"].shape == (c, 1, 7, 7)
    y = F.conv2d(x, p["dwconv.weight"], p["dwconv.bias"], padding=3, groups=c)
    y = reference_channel_norm(y, p["norm.weight"], p["norm.bias"], 1e-6)
    y = y.permute(0, 2, 3, 1)  # channels last for the two linear layers
    hidden = y @ p["pwconv1.weight"].T + p["pwconv1.bias"]
    assert hidden.shape[-1] == 4 * c
    hidden = 0.5 * hidden * (1 + torch.erf(hidden / math.sqrt(2.0)))  # exact GELU
    y = (hidden @ p["pwconv2.weight"].T + p["pwconv2.bias"]) * p["gamma"]
    expected = x + y.permute(0, 3, 1, 2)
    torch.testing.assert_close(block(x), expected, rtol=1e-10, atol=1e-10)


def test_layer_scale_starts_at_its_init_value_or_is_absent() -> None:
    assert torch.equal(ConvNeXtBlock(4).gamma.detach(), torch.full((4,), 1e-6))
    assert torch.equal(ConvNeXtBlock(4, layer_scale_init=0.5).gamma.detach(), torch.full((4,), 0.5))
    block = ConvNeXtBlock(4, layer_scale_init=0.0)
    assert block.gamma is None and "gamma" not in block.state_dict()


def test_drop_path_rate_rises_linearly_over_all_blocks() -> None:
    model = convnext(depths=list(DEPTHS), dims=list(DIMS), drop_path=0.4)
    rates = [block.drop_path.p for stage in model.stages for block in stage]
    torch.testing.assert_close(torch.tensor(rates), torch.linspace(0.0, 0.4, sum(DEPTHS)))


# --- the network --------------------------------------------------------------------------------


def test_narrow_variant_outputs_c2_to_c5_and_backpropagates() -> None:
    torch.manual_seed(0)
    model = convnext(**NARROW, drop_path=0.1, layer_scale_init=1.0)
    assert model.out_channels == list(DIMS) and model.strides == [4, 8, 16, 32]
    images = torch.randn(2, 3, 64, 96)
    features = model(images)
    assert [tuple(f.shape) for f in features] == [
        (2, 8, 16, 24),
        (2, 16, 8, 12),
        (2, 32, 4, 6),
        (2, 64, 2, 3),
    ]
    # Every output passes through its output norm: zero mean over channels at every pixel.
    for f in features:
        torch.testing.assert_close(f.mean(dim=1), torch.zeros_like(f[:, 0]), atol=1e-5, rtol=0)
    sum(f.square().mean() for f in features).backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


def test_variant_defaults_and_overrides() -> None:
    b = convnext("convnext_b", dims=list(DIMS))
    assert b.depths == (3, 3, 27, 3) and [len(s) for s in b.stages] == [3, 3, 27, 3]
    t = convnext("convnext_t", depths=[1, 1, 1, 1])
    assert t.dims == (96, 192, 384, 768) and t.out_channels == [96, 192, 384, 768]
    assert t.depths == (1, 1, 1, 1)
    with pytest.raises(Exception, match="dims"):
        convnext(dims=[8, 16, 0, 64])


def test_frozen_stages_fix_the_stem_and_first_stages() -> None:
    model = convnext(**NARROW, frozen_stages=2, drop_path=0.2)
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    prefixes = ("downsample_layers.0.", "downsample_layers.1.", "stages.0.", "stages.1.")
    assert frozen == {n for n, _ in model.named_parameters() if n.startswith(prefixes)}
    model.train()
    assert not model.stages[1].training and model.stages[2].training
    assert model.norm0.training  # output norms are new, never frozen


# --- checkpoint layouts, written from the description ------------------------------------------


def official_shapes(depths, dims, classes: int = 10) -> dict[str, tuple[int, ...]]:
    """facebookresearch/ConvNeXt ImageNet checkpoint: key -> shape."""
    shapes: dict[str, tuple[int, ...]] = {
        "downsample_layers.0.0.weight": (dims[0], 3, 4, 4),
        "downsample_layers.0.0.bias": (dims[0],),
        "downsample_layers.0.1.weight": (dims[0],),
        "downsample_layers.0.1.bias": (dims[0],),
    }
    for i in range(1, 4):
        shapes[f"downsample_layers.{i}.0.weight"] = (dims[i - 1],)
        shapes[f"downsample_layers.{i}.0.bias"] = (dims[i - 1],)
        shapes[f"downsample_layers.{i}.1.weight"] = (dims[i], dims[i - 1], 2, 2)
        shapes[f"downsample_layers.{i}.1.bias"] = (dims[i],)
    for i, (depth, c) in enumerate(zip(depths, dims, strict=True)):
        for j in range(depth):
            b = f"stages.{i}.{j}."
            shapes[b + "gamma"] = (c,)
            shapes[b + "dwconv.weight"] = (c, 1, 7, 7)
            shapes[b + "dwconv.bias"] = (c,)
            shapes[b + "norm.weight"] = (c,)
            shapes[b + "norm.bias"] = (c,)
            shapes[b + "pwconv1.weight"] = (4 * c, c)
            shapes[b + "pwconv1.bias"] = (4 * c,)
            shapes[b + "pwconv2.weight"] = (c, 4 * c)
            shapes[b + "pwconv2.bias"] = (c,)
    shapes["norm.weight"] = (dims[3],)
    shapes["norm.bias"] = (dims[3],)
    shapes["head.weight"] = (classes, dims[3])
    shapes["head.bias"] = (classes,)
    return shapes


def timm_to_official(depths) -> dict[str, str]:
    """timm key -> official key for every tensor the two layouts share (heads excluded)."""
    mapping = {
        f"stem.{k}.{p}": f"downsample_layers.0.{k}.{p}" for k in (0, 1) for p in ("weight", "bias")
    }
    for i in range(1, 4):
        for k in (0, 1):
            for p in ("weight", "bias"):
                mapping[f"stages.{i}.downsample.{k}.{p}"] = f"downsample_layers.{i}.{k}.{p}"
    parts = {"conv_dw": "dwconv", "norm": "norm", "mlp.fc1": "pwconv1", "mlp.fc2": "pwconv2"}
    for i, depth in enumerate(depths):
        for j in range(depth):
            mapping[f"stages.{i}.blocks.{j}.gamma"] = f"stages.{i}.{j}.gamma"
            for theirs, ours in parts.items():
                for p in ("weight", "bias"):
                    mapping[f"stages.{i}.blocks.{j}.{theirs}.{p}"] = f"stages.{i}.{j}.{ours}.{p}"
    return mapping


def timm_shapes(depths, dims, classes: int = 10) -> dict[str, tuple[int, ...]]:
    """timm ConvNeXt checkpoint: key -> shape (head: NormMlpClassifierHead)."""
    official = official_shapes(depths, dims, classes)
    shapes = {ours: official[theirs] for ours, theirs in timm_to_official(depths).items()}
    shapes["head.norm.weight"] = (dims[3],)
    shapes["head.norm.bias"] = (dims[3],)
    shapes["head.fc.weight"] = (classes, dims[3])
    shapes["head.fc.bias"] = (classes,)
    return shapes


def random_state(shapes: dict[str, tuple[int, ...]], seed: int = 0) -> dict[str, Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randn(shape, generator=g) for k, shape in shapes.items()}


OUTPUT_NORMS = [f"norm{i}.{p}" for i in range(4) for p in ("weight", "bias")]


def assert_official_loaded(model: ConvNeXt, official: dict[str, Tensor]) -> None:
    """Every model tensor equals the official tensor of the same name; output norms at init."""
    own = model.state_dict()
    assert set(own) - set(OUTPUT_NORMS) == set(official) - {
        "norm.weight",
        "norm.bias",
        "head.weight",
        "head.bias",
    }
    for key in OUTPUT_NORMS:
        init = torch.ones_like(own[key]) if key.endswith("weight") else torch.zeros_like(own[key])
        assert torch.equal(own[key], init), key
    assert sorted(model.left_at_init) == sorted(OUTPUT_NORMS)
    for key, value in own.items():
        if key not in OUTPUT_NORMS:
            assert torch.equal(value, official[key]), key


def test_official_checkpoint_wrapped_under_model_loads_strictly(tmp_path: Path) -> None:
    state = random_state(official_shapes(DEPTHS, DIMS))
    path = tmp_path / "convnext_tiny_1k_224.pth"
    torch.save({"model": state}, path)
    model = convnext(depths=list(DEPTHS), dims=list(DIMS), weights=str(path))
    assert model.loaded_weights == path
    assert_official_loaded(model, state)


def test_timm_checkpoint_loads_strictly(tmp_path: Path) -> None:
    state = random_state(timm_shapes(DEPTHS, DIMS), seed=3)
    path = tmp_path / "model.safetensors"
    save_file(state, str(path))
    model = convnext(depths=list(DEPTHS), dims=list(DIMS), weights=str(path))
    official = {theirs: state[ours] for ours, theirs in timm_to_official(DEPTHS).items()}
    official |= {
        k: torch.zeros(1) for k in ("norm.weight", "norm.bias", "head.weight", "head.bias")
    }
    assert_official_loaded(model, official)


def test_output_norms_in_a_checkpoint_are_loaded(tmp_path: Path) -> None:
    shapes = official_shapes(DEPTHS, DIMS)
    shapes |= {f"norm{i}.{p}": (DIMS[i],) for i in range(4) for p in ("weight", "bias")}
    state = random_state(shapes, seed=5)
    path = tmp_path / "detection_backbone.pth"
    torch.save(state, path)
    model = convnext(depths=list(DEPTHS), dims=list(DIMS), weights=str(path))
    assert model.left_at_init == []
    for key in OUTPUT_NORMS:
        assert torch.equal(model.state_dict()[key], state[key]), key


def _without(state: dict[str, Tensor], key: str) -> dict[str, Tensor]:
    return {k: v for k, v in state.items() if k != key}


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda s: _without(s, "stages.1.1.pwconv2.weight"), r"missing .*stages\.1\.1\.pwconv2"),
        (
            lambda s: s | {"stages.2.0.gamma": torch.zeros(7)},
            r"shape mismatch.*stages\.2\.0\.gamma \(7,\) vs model \(32,\)",
        ),
        (lambda s: s | {"stages.3.1.gamma": torch.zeros(64)}, r"unknown .*stages\.3\.1\.gamma"),
        (
            lambda s: ResNet(18, width=8).state_dict(),
            r"not a ConvNeXt checkpoint.*conv1\.weight",
        ),
    ],
    ids=["missing", "shape", "unknown", "resnet"],
)
def test_bad_checkpoints_fail_with_one_line_naming_the_file(
    tmp_path: Path, damage, message: str
) -> None:
    path = tmp_path / "bad.pth"
    torch.save(damage(random_state(official_shapes(DEPTHS, DIMS))), path)
    with pytest.raises(WeightsError, match=message) as error:
        convnext(depths=list(DEPTHS), dims=list(DIMS), weights=str(path))
    assert str(path) in str(error.value) and "\n" not in str(error.value)


def test_timm_checkpoint_problems_are_named_too(tmp_path: Path) -> None:
    state = _without(random_state(timm_shapes(DEPTHS, DIMS)), "stem.1.bias")
    path = tmp_path / "timm.safetensors"
    save_file(state, str(path))
    with pytest.raises(WeightsError, match=r"timm layout.*downsample_layers\.0\.1\.bias"):
        convnext(depths=list(DEPTHS), dims=list(DIMS), weights=str(path))


def test_a_convnext_b_checkpoint_does_not_fit_convnext_t_dims(tmp_path: Path) -> None:
    path = tmp_path / "wider.pth"
    torch.save(random_state(official_shapes(DEPTHS, (16, 32, 64, 128))), path)
    with pytest.raises(WeightsError, match=r"shape mismatches"):
        convnext(depths=list(DEPTHS), dims=list(DIMS), weights=str(path))


# --- in a model -----------------------------------------------------------------------------------


def convnext_model_config(**backbone) -> ModelConfig:
    base = tiny_config(("semantic",)).model_dump()
    base["backbone"] = {"type": "convnext_t", **NARROW, **backbone}
    return ModelConfig.model_validate(base)


def test_build_model_with_convnext_backbone_trains() -> None:
    torch.manual_seed(0)
    model = build_model(convnext_model_config())
    assert isinstance(model.backbone, ConvNeXt)
    model.train()
    losses = model.losses(make_batch(2, ("semantic",)))
    assert torch.isfinite(losses["semantic"])
    sum(losses.values()).backward()
    assert model.backbone.downsample_layers[0][0].weight.grad.abs().sum() > 0
    assert model.backbone.stages[3][0].pwconv2.weight.grad.abs().sum() > 0


def test_build_model_loads_an_official_checkpoint(tmp_path: Path) -> None:
    state = random_state(official_shapes((1, 1, 1, 1), DIMS), seed=7)
    path = tmp_path / "convnext.pth"
    torch.save({"model": state}, path)
    model = build_model(convnext_model_config(weights=str(path), frozen_stages=1))
    assert_official_loaded(model.backbone, state)
    assert not model.backbone.stages[0][0].dwconv.weight.requires_grad
