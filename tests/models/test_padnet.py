"""PAD-Net and 3-ways PAD-Net exchange modules: values against float64 reimplementations.

The references below are written with `F.conv2d` and the normalisation formula from the modules'
own weights; the tiny networks are the shared test config (ResNet-18 width 8, 16-channel heads).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from batches import make_batch, tiny_config
from torch import Tensor, nn

from drivemtl.models import build_model
from drivemtl.models.config import ModelConfig
from drivemtl.models.exchanges.padnet import (
    Bottleneck,
    Distillation,
    PadNet3Exchange,
    PadNetExchange,
    SpatialGate,
)
from drivemtl.models.features import Features

TASKS = ("semantic", "depth", "normals")

# --- float64 references ------------------------------------------------------------------------


def ref_gate(source: Tensor, gate: SpatialGate) -> Tensor:
    """W^f * s times 1 / (1 + exp(-W^m * s)), the message of PAD-Net's spatial attention."""
    mask = F.conv2d(source, gate.mask.weight, padding=1)
    return F.conv2d(source, gate.features.weight, padding=1) / (1 + torch.exp(-mask))


def ref_distill(maps: dict[str, Tensor], module: Distillation) -> dict[str, Tensor]:
    """f_t + sum over a != t of the gated message of a, sources resized to the target's size."""
    out = {}
    for t, target in maps.items():
        total = target.clone()
        for a, source in maps.items():
            if a == t:
                continue
            if source.shape[-2:] != target.shape[-2:]:
                source = F.interpolate(
                    source, target.shape[-2:], mode="bilinear", align_corners=False
                )
            total = total + ref_gate(source, module.messages[t][a])
        out[t] = total
    return out


def ref_norm(x: Tensor, bn: nn.BatchNorm2d) -> Tensor:
    """Eval-mode batch norm: (x - mean) / sqrt(var + eps) * weight + bias."""
    shape = (1, -1, 1, 1)
    scale = bn.weight.view(shape) / torch.sqrt(bn.running_var.view(shape) + bn.eps)
    return (x - bn.running_mean.view(shape)) * scale + bn.bias.view(shape)


def ref_bottleneck(x: Tensor, block: Bottleneck) -> Tensor:
    """relu(bn(1x1(relu(bn(3x3(relu(bn(1x1 x))))))) + shortcut(x))."""
    y = torch.relu(ref_norm(F.conv2d(x, block.conv1.weight), block.norm1))
    y = torch.relu(ref_norm(F.conv2d(y, block.conv2.weight, padding=1), block.norm2))
    y = ref_norm(F.conv2d(y, block.conv3.weight), block.norm3)
    if isinstance(block.shortcut, nn.Identity):
        shortcut = x
    else:
        conv, bn = block.shortcut
        shortcut = ref_norm(F.conv2d(x, conv.weight), bn)
    return torch.relu(y + shortcut)


def randomize_norms(module: nn.Module) -> None:
    """Non-trivial running statistics and affine parameters for every batch norm of `module`."""
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            nn.init.uniform_(m.weight, 0.5, 1.5)
            nn.init.uniform_(m.bias, -0.2, 0.2)


def features_with(maps: dict[str, Tensor]) -> Features:
    """A Features container holding only task maps (what exchange modules read and write)."""
    x = next(iter(maps.values()))
    return Features(image=x, pixel=[x], strides=(4,), input_size=(32, 48),
                    image_sizes=[(32, 48)], tasks=dict(maps))  # fmt: skip


def config_with(tasks: tuple[str, ...], exchanges: list[dict]) -> ModelConfig:
    """The tiny test model config with exchange modules (validated like a config file)."""
    return ModelConfig.model_validate({**tiny_config(tasks).model_dump(), "exchanges": exchanges})


def count(module: nn.Module) -> int:
    """Number of parameters of `module`."""
    return sum(p.numel() for p in module.parameters())


# --- the distillation and the bottlenecks ------------------------------------------------------


def test_distillation_matches_a_float64_reimplementation_for_three_tasks() -> None:
    torch.manual_seed(0)
    module = Distillation(list(TASKS), 8).double()
    maps = {
        "semantic": torch.randn(2, 8, 8, 12, dtype=torch.float64),
        "depth": torch.randn(2, 8, 4, 6, dtype=torch.float64),  # resized to 8x12 for the others
        "normals": torch.randn(2, 8, 8, 12, dtype=torch.float64),
    }
    out = module(maps)
    expected = ref_distill(maps, module)
    assert sorted(module.messages["depth"]) == ["normals", "semantic"]  # one gate per pair
    for t in TASKS:
        assert out[t].shape == maps[t].shape
        assert torch.allclose(out[t], expected[t], atol=1e-12)
        assert not torch.allclose(out[t], maps[t])  # the messages are not negligible
    # messages (gates included) are computed from the sources only: shifting the target's own
    # map shifts its output by exactly that much
    delta = torch.randn_like(maps["semantic"])
    shifted = module({**maps, "semantic": maps["semantic"] + delta})["semantic"]
    assert torch.allclose(shifted - out["semantic"], delta, atol=1e-12)


def test_bottleneck_is_the_relu_of_its_shortcut_when_the_last_conv_is_zero() -> None:
    torch.manual_seed(0)
    x = torch.randn(1, 16, 8, 12)
    same = Bottleneck(16, 16).eval()
    nn.init.zeros_(same.conv3.weight)
    assert torch.equal(same(x.abs()), x.abs())  # identity on a non-negative input
    assert torch.equal(same(x), x.clamp(min=0))
    projected = Bottleneck(16, 8).eval()
    nn.init.zeros_(projected.conv3.weight)
    with torch.no_grad():
        projected.shortcut[0].weight.copy_(torch.eye(8, 16).view(8, 16, 1, 1))
    # default BN statistics: the shortcut keeps channels 0..7, divided by sqrt(1 + eps)
    expected = (x[:, :8] / (1 + 1e-5) ** 0.5).clamp(min=0)
    assert torch.allclose(projected(x), expected, atol=1e-6)


def test_bottleneck_matches_a_float64_reimplementation() -> None:
    torch.manual_seed(0)
    for in_channels in (8, 16):
        block = Bottleneck(in_channels, 8).double().eval()
        randomize_norms(block)
        x = torch.randn(2, in_channels, 8, 12, dtype=torch.float64)
        assert torch.allclose(block(x), ref_bottleneck(x, block), atol=1e-12)


def test_padnet_exchange_matches_a_float64_reimplementation() -> None:
    torch.manual_seed(0)
    widths = {"semantic": 16, "depth": 12, "normals": 16}
    module = PadNetExchange(widths, channels=8).double().eval()
    randomize_norms(module)
    assert module.modifies == ("task:semantic", "task:depth", "task:normals")
    maps = {t: torch.randn(1, w, 8, 12, dtype=torch.float64) for t, w in widths.items()}
    maps["depth"] = maps["depth"][..., ::2, ::2]  # a coarser map: resized inside the distillation
    features = features_with(maps)
    module(features)
    before = {t: ref_bottleneck(ref_bottleneck(maps[t], b[0]), b[1])
              for t, b in module.before.items()}  # fmt: skip
    distilled = ref_distill(before, module.distill)
    for t, w in widths.items():
        first, second, conv = module.after[t]
        y = ref_bottleneck(ref_bottleneck(distilled[t], first), second)
        expected = F.conv2d(y, conv.weight, conv.bias)
        assert features.tasks[t].shape == (1, w, *maps[t].shape[-2:])
        assert torch.allclose(features.tasks[t], expected, atol=1e-12)


def test_padnet3_matches_a_float64_reimplementation_block_after_block() -> None:
    torch.manual_seed(0)
    widths = {"semantic": 16, "depth": 8}
    module = PadNet3Exchange(widths, channels=8, blocks=2).double()
    assert isinstance(module.project_in["depth"], nn.Identity)  # same width: no projection
    maps = {t: torch.randn(2, w, 8, 12, dtype=torch.float64) for t, w in widths.items()}
    features = features_with(maps)
    module(features)
    proj_in, proj_out = module.project_in["semantic"], module.project_out["semantic"]
    x = {"semantic": F.conv2d(maps["semantic"], proj_in.weight, proj_in.bias),
         "depth": maps["depth"]}  # fmt: skip
    for block in module.blocks:
        x = ref_distill(x, block)
    expected = F.conv2d(x["semantic"], proj_out.weight, proj_out.bias)
    assert torch.allclose(features.tasks["semantic"], expected, atol=1e-12)
    assert torch.allclose(features.tasks["depth"], x["depth"], atol=1e-12)


# --- inside a tiny MultiTaskNet ----------------------------------------------------------------


def padnet_params(widths: list[int], c: int) -> int:
    """Hand count of `padnet` at width c (bottleneck mid width c / 4, batch norms: 2 per channel)."""
    m = c // 4

    def bottleneck(w: int) -> int:
        body = w * m + 2 * m + 9 * m * m + 2 * m + m * c + 2 * c  # 1x1, bn, 3x3, bn, 1x1, bn
        return body + (w * c + 2 * c if w != c else 0)  # projected shortcut

    per_task = [bottleneck(w) + 3 * bottleneck(c) + (c * w + w) for w in widths]
    pairs = len(widths) * (len(widths) - 1)
    return sum(per_task) + pairs * 2 * 9 * c * c  # two 3x3 convs (no bias) per ordered pair


def test_padnet_runs_between_the_decoders_and_the_predictors() -> None:
    torch.manual_seed(0)
    cfg = config_with(TASKS, [{"type": "padnet", "tasks": list(TASKS), "channels": 8}])
    model = build_model(cfg).eval()
    plain = build_model(config_with(TASKS, []))
    # 16-channel decoders, c = 8: 3 x (252 + 3 x 92 + 144) + 6 pairs x 1152 = 8928
    assert padnet_params([16, 16, 16], 8) == 8928
    assert count(model.exchanges[0]) == 8928 == count(model) - count(plain)
    assert model.stage_prefixes()["exchange"] == ["exchanges.0."]
    order = [(s.kind, s.path) for s in model.schedule(["semantic"])]
    exchange = order.index(("exchange", "exchanges.0"))
    assert max(order.index(("decoder", f"heads.{t}")) for t in TASKS) < exchange
    assert exchange < order.index(("predictor", "heads.semantic"))
    assert ("predictor", "heads.depth") not in order
    batch = make_batch(1, TASKS)
    with torch.no_grad():
        out = model(batch, ["semantic"])
        manual = model.extract(batch.images, batch.image_sizes)
        manual.tasks = {t: model.heads[t].decode(manual) for t in TASKS}
        decoded = dict(manual.tasks)
        model.exchanges[0](manual)
        expected = model.heads["semantic"].predict(manual.tasks["semantic"], manual)["logits"]
    assert torch.allclose(out["semantic"]["logits"], expected, atol=1e-6)
    assert not torch.allclose(manual.tasks["semantic"], decoded["semantic"])
    preds = model.predict(batch)
    assert preds[0].semantic.shape == tuple(batch.metas[0].orig_size)
    assert torch.isfinite(preds[0].depth).all()


def test_padnet_trains_with_the_task_losses() -> None:
    torch.manual_seed(0)
    tasks = ("semantic", "depth")
    model = build_model(
        config_with(tasks, [{"type": "padnet", "tasks": list(tasks), "channels": 8}])
    )
    assert count(model.exchanges[0]) == padnet_params([16, 16], 8) == 2 * 672 + 2 * 1152
    losses = model.train().losses(make_batch(2, tasks))
    (losses["semantic"] + losses["depth"]).backward()
    gate = model.exchanges[0].distill.messages["semantic"]["depth"]
    assert gate.features.weight.grad.abs().sum() > 0 and gate.mask.weight.grad.abs().sum() > 0


def test_padnet3_in_a_tiny_model_counts_its_projections_and_blocks() -> None:
    torch.manual_seed(0)
    tasks = ("semantic", "depth")
    for blocks, hand in ((1, 2864), (3, 7472)):
        # per task 1x1 in (16*8 + 8) and out (8*16 + 16); per block 2 pairs x 2 x 9*8*8
        assert hand == 2 * (136 + 144) + blocks * 2 * 2 * 9 * 8 * 8
        spec = {"type": "padnet3", "tasks": list(tasks), "channels": 8, "blocks": blocks}
        model = build_model(config_with(tasks, [spec])).eval()
        assert count(model.exchanges[0]) == hand
    order = [(s.kind, s.path) for s in model.schedule(["depth"])]
    assert order.index(("decoder", "heads.semantic")) < order.index(("exchange", "exchanges.0"))
    assert order.index(("exchange", "exchanges.0")) < order.index(("predictor", "heads.depth"))
    batch = make_batch(1, tasks)
    with torch.no_grad():
        out = model(batch)
    assert out["depth"]["inverse"].shape[-2:] == batch.images.shape[-2:]
    native = build_model(config_with(tasks, [{"type": "padnet3", "tasks": list(tasks),
                                              "channels": 16}]))  # fmt: skip
    assert count(native.exchanges[0]) == 2 * 2 * 9 * 16 * 16  # decoder width: gates only


# --- configuration errors ----------------------------------------------------------------------


def test_a_task_outside_the_model_or_without_decoder_features_is_named() -> None:
    with pytest.raises(ValueError, match=r"exchanges\.0: tasks \['normals'\] are not in"):
        config_with(("semantic", "depth"),
                    [{"type": "padnet", "tasks": ["semantic", "normals"]}])  # fmt: skip
    cfg = config_with(
        ("semantic", "tagging"), [{"type": "padnet3", "tasks": ["semantic", "tagging"]}]
    )
    with pytest.raises(
        ValueError, match=r"exchanges\.0 \(padnet3\): task 'tagging' has no decoder"
    ):
        build_model(cfg)
    cfg = config_with(("semantic", "depth"), [{"type": "padnet", "tasks": ["depth", "depth"]}])
    with pytest.raises(ValueError, match=r"tasks \['depth'\] are listed more than once"):
        build_model(cfg)
    with pytest.raises(ValueError, match=r"exchanges\.0\.channels"):
        config_with(("semantic", "depth"),
                    [{"type": "padnet", "tasks": ["semantic", "depth"], "channels": 10}])  # fmt: skip
