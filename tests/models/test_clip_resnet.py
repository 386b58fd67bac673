"""CLIP's ModifiedResNet backbone: OpenAI key layout, checkpoint loading, and its computations.

The references here are written from the architecture description (REFERENCE-NUMBERS.md, "CLIP
RN50 and CoOp"), not from the module: the checkpoint layout of every key and shape, a float64 loop
for the attention pooling, and functional convolutions / batch norms for a strided bottleneck.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from batches import make_batch, tiny_config
from torch import Tensor, nn

from drivemtl.config.base import build_plugin
from drivemtl.models import build_model
from drivemtl.models.backbones import BACKBONES, ModifiedResNet, ResNet
from drivemtl.models.backbones.clip_resnet import (
    AttentionPool2d,
    CLIPBottleneck,
    CLIPVisualArchitecture,
    clip_visual_state,
    infer_architecture,
)
from drivemtl.models.config import ModelConfig
from drivemtl.models.weights import WeightsError

# OpenAI's checkpoints are TorchScript archives, which torch now calls deprecated.
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.*deprecated:DeprecationWarning")

TINY = {"layers": (1, 1, 1, 1), "width": 8, "output_dim": 16, "input_resolution": 64}
TINY_HEADS = 4  # 8 * 32 // 64, OpenAI's rule

# --- the OpenAI checkpoint layout, written from the description ---------------------------


def clip_visual_shapes(
    layers: tuple[int, ...], width: int, output_dim: int, input_resolution: int
) -> dict[str, tuple[int, ...]]:
    """Key -> shape of OpenAI's `visual.*` tensors (prefix stripped) for a ModifiedResNet."""
    shapes: dict[str, tuple[int, ...]] = {}

    def bn(name: str, channels: int) -> None:
        for part in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"{name}.{part}"] = (channels,)
        shapes[f"{name}.num_batches_tracked"] = ()

    half = width // 2
    shapes["conv1.weight"] = (half, 3, 3, 3)
    bn("bn1", half)
    shapes["conv2.weight"] = (half, half, 3, 3)
    bn("bn2", half)
    shapes["conv3.weight"] = (width, half, 3, 3)
    bn("bn3", width)
    in_ch = width
    for stage, count in enumerate(layers):
        planes = width * 2**stage
        out_ch = planes * 4
        for block in range(count):
            prefix = f"layer{stage + 1}.{block}"
            source = in_ch if block == 0 else out_ch
            shapes[f"{prefix}.conv1.weight"] = (planes, source, 1, 1)
            bn(f"{prefix}.bn1", planes)
            shapes[f"{prefix}.conv2.weight"] = (planes, planes, 3, 3)
            bn(f"{prefix}.bn2", planes)
            shapes[f"{prefix}.conv3.weight"] = (out_ch, planes, 1, 1)
            bn(f"{prefix}.bn3", out_ch)
            if block == 0:  # stride 2, or (layer1) width -> 4 * width channels
                shapes[f"{prefix}.downsample.0.weight"] = (out_ch, source, 1, 1)
                bn(f"{prefix}.downsample.1", out_ch)
        in_ch = out_ch
    embed = width * 32
    shapes["attnpool.positional_embedding"] = ((input_resolution // 32) ** 2 + 1, embed)
    for name in ("q_proj", "k_proj", "v_proj"):
        shapes[f"attnpool.{name}.weight"] = (embed, embed)
        shapes[f"attnpool.{name}.bias"] = (embed,)
    shapes["attnpool.c_proj.weight"] = (output_dim, embed)
    shapes["attnpool.c_proj.bias"] = (output_dim,)
    return shapes


def random_clip_checkpoint(seed: int = 0, **arch) -> dict[str, Tensor]:
    """A whole CLIP-like state dict in float64: random `visual.*` tensors plus a few text keys."""
    g = torch.Generator().manual_seed(seed)
    state: dict[str, Tensor] = {}
    for key, shape in clip_visual_shapes(**{**TINY, **arch}).items():
        if key.endswith("num_batches_tracked"):
            value = torch.tensor(7)
        elif key.endswith("running_var"):
            value = torch.rand(shape, generator=g, dtype=torch.float64) + 0.5
        else:
            value = torch.randn(shape, generator=g, dtype=torch.float64) * 0.2
        state[f"visual.{key}"] = value
    state["token_embedding.weight"] = torch.randn(10, 4, generator=g, dtype=torch.float64)
    state["positional_embedding"] = torch.randn(5, 4, generator=g, dtype=torch.float64)
    state["text_projection"] = torch.randn(4, 16, generator=g, dtype=torch.float64)
    state["logit_scale"] = torch.tensor(4.6, dtype=torch.float64)
    state["context_length"] = torch.tensor(5)  # scalar entries of OpenAI's JIT state dicts
    return state


def assert_loaded(module: nn.Module, checkpoint: dict[str, Tensor]) -> None:
    """Every module tensor equals the checkpoint's `visual.` tensor (cast to the module dtype)."""
    visual = {k[len("visual.") :]: v for k, v in checkpoint.items() if k.startswith("visual.")}
    own = module.state_dict()
    assert set(own) == set(visual)
    for key, value in own.items():
        assert torch.equal(value, visual[key].to(value.dtype)), key


def clip_backbone(**options) -> ModifiedResNet:
    return build_plugin(BACKBONES, {"type": "clip_rn50", **options})


# --- layout and architecture inference ----------------------------------------------------


@pytest.mark.parametrize(
    "arch",
    [
        {"layers": (3, 4, 6, 3), "width": 64, "output_dim": 1024, "input_resolution": 224},  # RN50
        {"layers": (3, 4, 23, 3), "width": 64, "output_dim": 512, "input_resolution": 224},  # 101
        {"layers": (4, 6, 10, 6), "width": 80, "output_dim": 640, "input_resolution": 288},  # x4
        TINY,
    ],
)
def test_state_dict_has_openai_keys_and_shapes(arch: dict) -> None:
    with torch.device("meta"):
        module = ModifiedResNet(**arch, heads=arch["width"] // 2)
    shapes = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    assert shapes == clip_visual_shapes(**arch)
    assert module.out_channels == [arch["width"] * m for m in (4, 8, 16, 32)]
    assert module.strides == [4, 8, 16, 32]


def test_rn50_defaults_match_the_reference_numbers() -> None:
    with torch.device("meta"):
        module = clip_backbone()
    assert module.layers == (3, 4, 6, 3) and module.width == 64
    assert module.out_channels == [256, 512, 1024, 2048]
    assert tuple(module.attnpool.positional_embedding.shape) == (50, 2048)
    assert module.attnpool.num_heads == 32 and module.output_dim == 1024


@pytest.mark.parametrize(
    ("arch", "heads"),
    [
        ({"layers": (3, 4, 6, 3), "width": 64, "output_dim": 1024, "input_resolution": 224}, 32),
        ({"layers": (3, 4, 23, 3), "width": 64, "output_dim": 512, "input_resolution": 224}, 32),
        ({"layers": (4, 6, 10, 6), "width": 80, "output_dim": 640, "input_resolution": 288}, 40),
        (TINY, TINY_HEADS),
    ],
)
def test_architecture_is_inferred_from_shapes(arch: dict, heads: int) -> None:
    state = {
        f"visual.{k}": torch.empty(shape, device="meta")
        for k, shape in clip_visual_shapes(**arch).items()
    }
    state["text_projection"] = torch.empty(4, 4, device="meta")
    assert infer_architecture(state) == CLIPVisualArchitecture(**arch, heads=heads)
    assert infer_architecture(state, heads=4).heads == 4


def test_clip_visual_state_strips_the_prefix_and_drops_text_keys() -> None:
    state = random_clip_checkpoint()
    visual = clip_visual_state(state)
    assert set(visual) == set(clip_visual_shapes(**TINY))
    assert visual["conv1.weight"] is state["visual.conv1.weight"]


# --- loading ----------------------------------------------------------------------------------


def test_plain_state_dict_round_trip(tmp_path: Path) -> None:
    checkpoint = random_clip_checkpoint()
    path = tmp_path / "RN-tiny.pt"
    torch.save(checkpoint, path)
    module = clip_backbone(weights=str(path))
    assert (module.layers, module.width, module.output_dim) == ((1, 1, 1, 1), 8, 16)
    assert module.input_resolution == 64 and module.attnpool.num_heads == TINY_HEADS
    assert module.loaded_weights == path
    assert_loaded(module, checkpoint)


def test_frozen_bn_loads_a_checkpoint_with_batch_counters(tmp_path: Path) -> None:
    checkpoint = random_clip_checkpoint()
    path = tmp_path / "RN-tiny.pt"
    torch.save(checkpoint, path)
    module = clip_backbone(weights=str(path), norm="frozen_bn")
    own = module.state_dict()
    assert not any(k.endswith("num_batches_tracked") for k in own)
    for key, value in own.items():
        assert torch.equal(value, checkpoint[f"visual.{key}"].to(value.dtype)), key


class ScriptedCLIP(nn.Module):
    """A stand-in for OpenAI's scripted CLIP: the image tower under `visual`, a text scalar."""

    def __init__(self, visual: ModifiedResNet) -> None:
        super().__init__()
        self.visual = visual
        self.logit_scale = nn.Parameter(torch.tensor(4.6))

    def forward(self, images: Tensor) -> Tensor:
        return self.visual.embed(images) * self.logit_scale.exp()


def test_torchscript_archive_round_trip(tmp_path: Path) -> None:
    torch.manual_seed(0)
    original = ModifiedResNet(**TINY, heads=TINY_HEADS)
    with torch.no_grad():
        for buffer in original.buffers():
            if buffer.is_floating_point():
                buffer.uniform_(0.5, 1.5)
    original.eval()
    scripted = torch.jit.script(ScriptedCLIP(original))
    path = tmp_path / "RN-tiny-jit.pt"
    torch.jit.save(scripted, str(path))
    checkpoint = {f"visual.{k}": v for k, v in original.state_dict().items()}
    module = clip_backbone(weights=str(path)).eval()
    assert_loaded(module, checkpoint)
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = torch.jit.load(str(path))(images) / math.exp(4.6)
        assert torch.allclose(module.embed(images), expected, rtol=1e-4, atol=1e-5)


def test_options_that_contradict_the_checkpoint_are_an_error(tmp_path: Path) -> None:
    path = tmp_path / "RN-tiny.pt"
    torch.save(random_clip_checkpoint(), path)
    with pytest.raises(WeightsError, match=r"checkpoint has width 8, the options ask for 16"):
        clip_backbone(weights=str(path), width=16)
    assert clip_backbone(weights=str(path), layers=[1, 1, 1, 1]).layers == (1, 1, 1, 1)


def _vit_clip_state() -> dict[str, Tensor]:
    return {
        "visual.class_embedding": torch.zeros(16),
        "visual.positional_embedding": torch.zeros(5, 16),
        "visual.conv1.weight": torch.zeros(16, 3, 32, 32),
        "visual.transformer.resblocks.0.attn.in_proj_weight": torch.zeros(48, 16),
        "visual.proj": torch.zeros(16, 8),
        "text_projection": torch.zeros(16, 8),
    }


def _missing_key_state() -> dict[str, Tensor]:
    state = random_clip_checkpoint()
    del state["visual.layer2.0.bn2.running_var"]
    return state


def _extra_key_state() -> dict[str, Tensor]:
    state = random_clip_checkpoint()
    state["visual.layer1.0.gate.weight"] = torch.zeros(3)
    return state


def _bad_shape_state() -> dict[str, Tensor]:
    state = random_clip_checkpoint()
    state["visual.attnpool.k_proj.bias"] = torch.zeros(3)
    return state


@pytest.mark.parametrize(
    ("make_state", "message"),
    [
        (
            lambda: ResNet(18, width=8).state_dict(),
            r"not a CLIP ModifiedResNet checkpoint \(no visual\.\* tensors; a torchvision-style",
        ),
        (
            _vit_clip_state,
            r"not a CLIP ModifiedResNet checkpoint \(no visual\.layer1\.\*; a ViT CLIP has "
            r"visual\.transformer\.\*\)",
        ),
        (_missing_key_state, r"1 model tensors missing \(e\.g\. layer2\.0\.bn2\.running_var\)"),
        (_extra_key_state, r"1 unknown tensors \(e\.g\. layer1\.0\.gate\.weight\)"),
        (_bad_shape_state, r"1 shape mismatches \(e\.g\. attnpool\.k_proj\.bias \(3,\)"),
    ],
    ids=["torchvision", "vit", "missing", "unknown", "shape"],
)
def test_bad_checkpoints_fail_with_one_line_naming_the_file(
    tmp_path: Path, make_state, message: str
) -> None:
    path = tmp_path / "bad.pth"
    torch.save(make_state(), path)
    with pytest.raises(WeightsError, match=message) as error:
        clip_backbone(weights=str(path))
    text = str(error.value)
    assert text.startswith(f"{path}: ") and "\n" not in text


# --- computations against explicit references ---------------------------------------------


def attention_pool_reference(pool: AttentionPool2d, x: Tensor, pos: Tensor) -> Tensor:
    """Mean token attending over [mean, positions] per head, written as float64 loops."""
    n, c, h, w = x.shape
    heads = pool.num_heads
    d = c // heads
    lin = {name: getattr(pool, name) for name in ("q_proj", "k_proj", "v_proj", "c_proj")}
    results = []
    for b in range(n):
        tokens = [x[b, :, i, j] for i in range(h) for j in range(w)]
        tokens = [sum(tokens) / len(tokens), *tokens]
        tokens = [t + pos[i] for i, t in enumerate(tokens)]
        q = lin["q_proj"].weight @ tokens[0] + lin["q_proj"].bias
        keys = [lin["k_proj"].weight @ t + lin["k_proj"].bias for t in tokens]
        values = [lin["v_proj"].weight @ t + lin["v_proj"].bias for t in tokens]
        per_head = []
        for head in range(heads):
            part = slice(head * d, (head + 1) * d)
            scores = [float(q[part] @ k[part]) / math.sqrt(d) for k in keys]
            top = max(scores)
            e = [math.exp(s - top) for s in scores]
            per_head.append(sum(ei / sum(e) * v[part] for ei, v in zip(e, values, strict=True)))
        results.append(lin["c_proj"].weight @ torch.cat(per_head) + lin["c_proj"].bias)
    return torch.stack(results)


def test_attention_pool_matches_a_float64_loop() -> None:
    torch.manual_seed(0)
    pool = AttentionPool2d(spatial_dim=2, embed_dim=8, num_heads=2, output_dim=6).double()
    x = torch.randn(3, 8, 2, 2, dtype=torch.float64)
    with torch.no_grad():
        expected = attention_pool_reference(pool, x, pool.positional_embedding)
        assert torch.allclose(pool(x), expected, atol=1e-12)
        # another grid: the same computation with the resized positional embedding
        x = torch.randn(2, 8, 3, 4, dtype=torch.float64)
        pos = pool.positional_embedding_for(3, 4)
        assert torch.allclose(pool(x), attention_pool_reference(pool, x, pos), atol=1e-12)


def test_positional_embedding_is_resized_bicubically_in_row_major_order() -> None:
    pool = AttentionPool2d(spatial_dim=3, embed_dim=4, num_heads=1, output_dim=4).double()
    rows, cols = torch.meshgrid(torch.arange(3.0), torch.arange(3.0), indexing="ij")
    with torch.no_grad():
        pool.positional_embedding[0] = torch.tensor([9.0, 8.0, 7.0, 6.0])
        pool.positional_embedding[1:, 0] = rows.flatten()
        pool.positional_embedding[1:, 1] = cols.flatten()
        pool.positional_embedding[1:, 2] = 5.0
        pool.positional_embedding[1:, 3] = (rows * 3 + cols).flatten() ** 2
        assert pool.positional_embedding_for(3, 3) is pool.positional_embedding
        resized = pool.positional_embedding_for(5, 7)
    assert resized.shape == (36, 4)
    assert torch.equal(resized[0], torch.tensor([9.0, 8.0, 7.0, 6.0], dtype=torch.float64))
    grid = resized[1:].reshape(5, 7, 4)
    assert torch.allclose(grid[..., 0], grid[:, :1, 0].expand(5, 7))  # rows vary down only
    assert torch.allclose(grid[..., 1], grid[:1, :, 1].expand(5, 7))  # cols vary across only
    assert grid[0, 0, 0] < grid[-1, 0, 0] and grid[0, 0, 1] < grid[0, -1, 1]
    assert torch.allclose(grid[..., 2], torch.full((5, 7), 5.0, dtype=torch.float64))
    # the same as resizing the [C, 3, 3] image bicubically (half-pixel centres)
    image = pool.positional_embedding[1:, 3].reshape(1, 1, 3, 3)
    reference = F.interpolate(image, size=(5, 7), mode="bicubic", align_corners=False)
    assert torch.allclose(grid[..., 3], reference[0, 0])


def _batch_norm(x: Tensor, bn: nn.BatchNorm2d) -> Tensor:
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    return (x - bn.running_mean.view(1, -1, 1, 1)) * scale.view(1, -1, 1, 1) + bn.bias.view(
        1, -1, 1, 1
    )


def _avg_pool2(x: Tensor) -> Tensor:
    n, c, h, w = x.shape
    return x.reshape(n, c, h // 2, 2, w // 2, 2).mean(dim=(3, 5))


def _randomise_norms(module: nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for bn in module.modules():
            if isinstance(bn, nn.BatchNorm2d):
                for t in (bn.weight, bn.bias, bn.running_mean):
                    t.copy_(torch.randn(t.shape, generator=g, dtype=t.dtype))
                bn.running_var.copy_(torch.rand(bn.running_var.shape, generator=g) + 0.5)


def test_strided_bottleneck_pools_before_conv3_and_in_the_shortcut() -> None:
    torch.manual_seed(0)
    block = CLIPBottleneck(in_ch=6, planes=4, stride=2).double().eval()
    _randomise_norms(block, 1)
    x = torch.randn(2, 6, 6, 8, dtype=torch.float64)
    with torch.no_grad():
        out = F.relu(_batch_norm(F.conv2d(x, block.conv1.weight), block.bn1))
        out = F.relu(_batch_norm(F.conv2d(out, block.conv2.weight, padding=1), block.bn2))
        out = _batch_norm(F.conv2d(_avg_pool2(out), block.conv3.weight), block.bn3)
        conv, bn = block.downsample[1], block.downsample[2]  # children "-1" (pool), "0", "1"
        shortcut = _batch_norm(F.conv2d(_avg_pool2(x), conv.weight), bn)
        expected = F.relu(out + shortcut)
        assert torch.allclose(block(x), expected, atol=1e-12)
    assert expected.shape == (2, 16, 3, 4)


def test_stem_is_three_convolutions_and_an_average_pool() -> None:
    torch.manual_seed(0)
    module = ModifiedResNet(**TINY, heads=TINY_HEADS).double().eval()
    _randomise_norms(module, 2)
    images = torch.randn(1, 3, 64, 96, dtype=torch.float64)
    with torch.no_grad():
        x = F.relu(
            _batch_norm(F.conv2d(images, module.conv1.weight, stride=2, padding=1), module.bn1)
        )
        x = F.relu(_batch_norm(F.conv2d(x, module.conv2.weight, padding=1), module.bn2))
        x = F.relu(_batch_norm(F.conv2d(x, module.conv3.weight, padding=1), module.bn3))
        assert torch.allclose(module.stem(images), _avg_pool2(x), atol=1e-12)
        maps = module(images)
        assert [tuple(m.shape) for m in maps] == [
            (1, 32, 16, 24), (1, 64, 8, 12), (1, 128, 4, 6), (1, 256, 2, 3)
        ]  # fmt: skip
        assert torch.allclose(module.embed(images), module.attnpool(maps[-1]), atol=1e-12)
        assert module.embed(images).shape == (1, 16)


def test_frozen_stages_stay_fixed_and_in_eval_mode() -> None:
    module = clip_backbone(**TINY, frozen_stages=1)
    frozen = [n for n, p in module.named_parameters() if not p.requires_grad]
    assert {n.split(".")[0] for n in frozen} == {
        "conv1",
        "bn1",
        "conv2",
        "bn2",
        "conv3",
        "bn3",
        "layer1",
    }
    module.train()
    assert not module.bn3.training and not module.layer1[0].bn1.training
    assert module.layer2[0].bn1.training


# --- in a model -------------------------------------------------------------------------------


def clip_model_config(**backbone) -> ModelConfig:
    cfg = tiny_config(("semantic",)).model_dump()
    cfg["backbone"] = {"type": "clip_rn50", **TINY, **backbone}
    return ModelConfig.model_validate(cfg)


def test_build_model_with_clip_backbone_trains() -> None:
    torch.manual_seed(0)
    model = build_model(clip_model_config(layers=[1, 1, 1, 1]))
    assert isinstance(model.backbone, ModifiedResNet)
    model.train()
    losses = model.losses(make_batch(2, ("semantic",)))
    sum(losses.values()).backward()
    assert model.backbone.conv1.weight.grad.abs().sum() > 0
    assert model.backbone.layer4[0].conv3.weight.grad.abs().sum() > 0


def test_build_model_loads_a_torchscript_checkpoint_once(tmp_path: Path) -> None:
    torch.manual_seed(0)
    original = ModifiedResNet(**TINY, heads=TINY_HEADS)
    path = tmp_path / "RN-tiny-jit.pt"
    torch.jit.save(torch.jit.script(ScriptedCLIP(original)), str(path))
    model = build_model(clip_model_config(weights=str(path), norm="frozen_bn", frozen_stages=4))
    for key, value in model.backbone.state_dict().items():
        assert torch.equal(value, original.state_dict()[key]), key
    assert not any(p.requires_grad for n, p in model.backbone.named_parameters() if "layer" in n)
