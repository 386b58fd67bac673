"""Swin backbone: C2..C5 shapes, forward / backward, and strict loading of official checkpoints
whose keys and shapes are written out here from the architecture description."""

from __future__ import annotations

import pytest
import torch

from drivemtl.config.base import build_plugin
from drivemtl.models.backbones import BACKBONES
from drivemtl.models.backbones.swin import SwinTransformer, load_swin_checkpoint
from drivemtl.models.weights import WeightsError

NARROW = {"embed_dim": 16, "depths": (1, 1, 1, 1), "heads": (1, 1, 2, 2), "window_size": 4}
NARROW_TWO = {**NARROW, "depths": (2, 1, 2, 1)}  # shifted blocks in stages 1 and 3


def narrow(**extra) -> SwinTransformer:
    return build_plugin(BACKBONES, {"type": "swin_t", **NARROW_TWO, "drop_path": 0.0, **extra})


def official_index(ws: int) -> torch.Tensor:
    """Relative position index written pair by pair: (dy + ws-1) * (2ws-1) + (dx + ws-1)."""
    n = ws * ws
    index = torch.zeros(n, n, dtype=torch.long)
    for i in range(n):
        for j in range(n):
            dy, dx = i // ws - j // ws, i % ws - j % ws
            index[i, j] = (dy + ws - 1) * (2 * ws - 1) + dx + ws - 1
    return index


def official_state(embed_dim, depths, heads, ws, seed=0) -> dict[str, torch.Tensor]:
    """An official-release Swin ImageNet state dict (random values) from the paper's layout:
    merging at the end of stages 1-3, a final norm and a 1000-way head, attn_mask buffers in
    shifted blocks."""
    gen = torch.Generator().manual_seed(seed)
    state: dict[str, torch.Tensor] = {}

    def put(key: str, *shape: int) -> None:
        state[key] = torch.randn(*shape, generator=gen)

    put("patch_embed.proj.weight", embed_dim, 3, 4, 4)
    put("patch_embed.proj.bias", embed_dim)
    put("patch_embed.norm.weight", embed_dim)
    put("patch_embed.norm.bias", embed_dim)
    for i, (depth, h) in enumerate(zip(depths, heads, strict=True)):
        c = embed_dim * 2**i
        for j in range(depth):
            p = f"layers.{i}.blocks.{j}."
            for norm in ("norm1", "norm2"):
                put(p + f"{norm}.weight", c)
                put(p + f"{norm}.bias", c)
            put(p + "attn.relative_position_bias_table", (2 * ws - 1) ** 2, h)
            state[p + "attn.relative_position_index"] = official_index(ws)
            put(p + "attn.qkv.weight", 3 * c, c)
            put(p + "attn.qkv.bias", 3 * c)
            put(p + "attn.proj.weight", c, c)
            put(p + "attn.proj.bias", c)
            put(p + "mlp.fc1.weight", 4 * c, c)
            put(p + "mlp.fc1.bias", 4 * c)
            put(p + "mlp.fc2.weight", c, 4 * c)
            put(p + "mlp.fc2.bias", c)
            if j % 2:
                state[p + "attn_mask"] = torch.zeros(4, ws * ws, ws * ws)
        if i < 3:
            put(f"layers.{i}.downsample.reduction.weight", 2 * c, 4 * c)
            put(f"layers.{i}.downsample.norm.weight", 4 * c)
            put(f"layers.{i}.downsample.norm.bias", 4 * c)
    put("norm.weight", 8 * embed_dim)
    put("norm.bias", 8 * embed_dim)
    put("head.weight", 1000, 8 * embed_dim)
    put("head.bias", 1000)
    return state


def test_swin_t_architecture_matches_official_layout():
    with torch.device("meta"):
        model = build_plugin(BACKBONES, {"type": "swin_t"})
    expected = official_state(96, (2, 2, 6, 2), (3, 6, 12, 24), 7)
    expected = {
        k: tuple(v.shape)
        for k, v in expected.items()
        if not (k.startswith(("head.", "norm.")) or k.endswith("attn_mask"))
    }
    for i, c in enumerate((96, 192, 384, 768)):
        expected[f"norm{i}.weight"] = expected[f"norm{i}.bias"] = (c,)
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == expected
    assert model.out_channels == [96, 192, 384, 768] and model.strides == [4, 8, 16, 32]
    rates = [b.drop_path.p for stage in model.layers for b in stage.blocks]
    assert rates[0] == 0.0 and rates[-1] == pytest.approx(0.2)
    shifts = [b.shift for b in model.layers[2].blocks]
    assert shifts == [0, 3, 0, 3, 0, 3]


def test_narrow_shapes_forward_backward():
    model = build_plugin(BACKBONES, {"type": "swin_t", **NARROW}).train()
    images = torch.randn(2, 3, 64, 96, requires_grad=True)
    outs = model(images)
    assert [tuple(o.shape) for o in outs] == [
        (2, 16, 16, 24),
        (2, 32, 8, 12),
        (2, 64, 4, 6),
        (2, 128, 2, 3),
    ]
    assert model.out_channels == [16, 32, 64, 128] and model.strides == [4, 8, 16, 32]
    sum(o.square().mean() for o in outs).backward()
    assert images.grad is not None and torch.isfinite(images.grad).all()
    assert all(p.grad is not None for p in model.parameters())


def test_any_image_size():
    model = narrow().eval()
    outs = model(torch.randn(1, 3, 50, 70))  # 13x18 tokens: windows, merging and embedding pad
    assert [tuple(o.shape[-2:]) for o in outs] == [(13, 18), (7, 9), (4, 5), (2, 3)]


def test_official_checkpoint_loads_strictly(tmp_path):
    state = official_state(16, (2, 1, 2, 1), (1, 1, 2, 2), 4)
    path = tmp_path / "swin_tiny_patch4_window7_224.pth"
    torch.save({"model": state}, path)
    model = narrow(weights=path)
    report = model.load_report
    assert report.ok and not report.missing and not report.unexpected
    assert sorted(report.initialised) == sorted(
        f"norm{i}.{p}" for i in range(4) for p in ("weight", "bias")
    )
    assert {"head.weight", "head.bias", "norm.weight", "norm.bias"} <= set(report.dropped)
    assert "layers.0.blocks.1.attn_mask" in report.dropped
    own = model.state_dict()
    used = [k for k in state if k not in report.dropped]
    assert sorted(used) == report.loaded
    for key in used:
        assert torch.equal(own[key], state[key]), key
    assert torch.equal(own["norm0.weight"], torch.ones(16))  # output norms at their init
    assert "kept at initialisation" in str(report)


def test_timm_layout_converts(tmp_path):
    state = official_state(16, (2, 1, 2, 1), (1, 1, 2, 2), 4)
    timm = {}
    for key, value in state.items():
        if key.endswith("relative_position_index"):
            continue  # timm keeps it out of the state dict
        for i in range(3):
            if key.startswith(f"layers.{i}.downsample."):
                key = key.replace(f"layers.{i}.", f"layers.{i + 1}.")
                break
        timm[key] = value
    path = tmp_path / "timm.safetensors"
    from safetensors.torch import save_file

    save_file(timm, str(path))
    model = SwinTransformer(16, (2, 1, 2, 1), (1, 1, 2, 2), 4)
    load_swin_checkpoint(model, path)
    own = model.state_dict()
    assert torch.equal(
        own["layers.0.downsample.reduction.weight"], timm["layers.1.downsample.reduction.weight"]
    )
    assert torch.equal(own["layers.1.blocks.0.attn.relative_position_index"], official_index(4))


@pytest.mark.parametrize("problem", ["missing", "shape", "resnet", "index"])
def test_bad_checkpoint_names_file_and_key(tmp_path, problem):
    state = official_state(16, (2, 1, 2, 1), (1, 1, 2, 2), 4)
    if problem == "missing":
        del state["layers.2.blocks.1.attn.qkv.weight"]
        expected = "missing in checkpoint: layers.2.blocks.1.attn.qkv.weight"
    elif problem == "shape":
        state["layers.1.downsample.reduction.weight"] = torch.zeros(64, 32)
        expected = "layers.1.downsample.reduction.weight: checkpoint (64, 32) vs model (64, 128)"
    elif problem == "resnet":
        state = {"conv1.weight": torch.zeros(64, 3, 7, 7), "bn1.weight": torch.zeros(64)}
        expected = "unexpected in checkpoint: conv1.weight"
    else:
        state["layers.0.blocks.0.attn.relative_position_index"] = torch.zeros(16, 16).long()
        expected = "relative_position_index differs: layers.0.blocks.0"
    path = tmp_path / f"bad_{problem}.pth"
    torch.save(state, path)
    model = SwinTransformer(16, (2, 1, 2, 1), (1, 1, 2, 2), 4)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(WeightsError) as info:
        load_swin_checkpoint(model, path)
    assert str(path) in str(info.value) and expected in str(info.value)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # untouched


def test_frozen_stages():
    model = narrow(frozen_stages=2).train()
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert any(n.startswith("patch_embed.") for n in frozen)
    assert all(
        n.startswith(("patch_embed.", "layers.0.", "layers.1.", "norm0.", "norm1.")) for n in frozen
    )
    assert not any(n.startswith(("layers.2.", "norm2.")) for n in frozen)
    assert not model.layers[0].training and model.layers[2].training
