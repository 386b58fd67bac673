"""DenseMTL's xTAM / mTEB exchange: values against float64 loops, α's role, and the model graph."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from batches import make_batch, tiny_config
from torch import Tensor, nn

from drivemtl.models import build_model
from drivemtl.models.config import ModelConfig
from drivemtl.models.exchanges.xtam import MTEB, XTAM

C = 8  # attention width in every test


def randomise_norms(module: nn.Module, generator: torch.Generator) -> None:
    """Give every BatchNorm non-trivial running statistics and affine parameters."""
    for bn in module.modules():
        if isinstance(bn, nn.BatchNorm2d):
            n = bn.num_features
            bn.running_mean.copy_(0.3 * torch.randn(n, generator=generator))
            bn.running_var.copy_(0.5 + torch.rand(n, generator=generator))
            bn.weight.data.copy_(1 + 0.3 * torch.randn(n, generator=generator))
            bn.bias.data.copy_(0.2 + 0.1 * torch.randn(n, generator=generator))


def tiny_xtam(alpha: Tensor | None = None) -> XTAM:
    """A float64 xTAM 5 -> 6 channels (width C, downscale 4) in eval mode, seeded."""
    g = torch.Generator().manual_seed(0)
    module = XTAM(source_channels=5, target_channels=6, channels=C, downscale=4).double().eval()
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(0.4 * torch.randn(p.shape, generator=g, dtype=p.dtype))
        randomise_norms(module, g)
        module.alpha.copy_(torch.zeros(1, C, 1, 1) if alpha is None else alpha)
    return module


def project_ref(block: nn.Sequential, v: Tensor) -> Tensor:
    """1x1 conv + eval BN + ReLU on one feature vector, written out."""
    conv, bn = block[0], block[1]
    y = conv.weight[:, :, 0, 0] @ v
    y = (y - bn.running_mean) / torch.sqrt(bn.running_var + bn.eps) * bn.weight + bn.bias
    return torch.clamp(y, min=0.0)


def pooled_ref(x: Tensor, s: int) -> dict[tuple[int, int], Tensor]:
    """Mean vector of every s x s window of x [C, H, W] (border windows: the pixels inside)."""
    h, w = x.shape[1:]
    cells = {}
    for i in range(math.ceil(h / s)):
        for j in range(math.ceil(w / s)):
            pixels = [x[:, y, z] for y in range(i * s, min(i * s + s, h))
                      for z in range(j * s, min(j * s + s, w))]  # fmt: skip
            cells[i, j] = sum(pixels) / len(pixels)
    return cells


def conv3x3_ref(conv: nn.Conv2d, x: Tensor, y: int, z: int) -> Tensor:
    """Output vector of a 3x3 zero-padded conv at pixel (y, z) of x [C, H, W]."""
    out = conv.bias.clone()
    for dy in range(3):
        for dz in range(3):
            yy, zz = y + dy - 1, z + dz - 1
            if 0 <= yy < x.shape[1] and 0 <= zz < x.shape[2]:
                out = out + conv.weight[:, :, dy, dz] @ x[:, yy, zz]
    return out


def message_ref(m: XTAM, source: Tensor, target: Tensor) -> Tensor:
    """[α ⊙ xtask, self] of one image (source [Cs, H, W], target [Ct, H, W]) by explicit loops."""
    s, h, w = m.downscale, target.shape[1], target.shape[2]
    queries = {p: project_ref(m.query, v) for p, v in pooled_ref(target, s).items()}
    small = pooled_ref(source, s)
    keys = {r: project_ref(m.key, v) for r, v in small.items()}
    values = {r: project_ref(m.value, v) for r, v in small.items()}
    attended = {}
    for p, q in queries.items():
        logits = {r: float(q @ k) / math.sqrt(m.channels) for r, k in keys.items()}
        top = max(logits.values())
        weights = {r: math.exp(v - top) for r, v in logits.items()}
        total = sum(weights.values())
        attended[p] = sum(weights[r] / total * values[r] for r in keys)
    out = torch.zeros(2 * m.channels, h, w, dtype=torch.float64)
    alpha = m.alpha.view(-1)
    for y in range(h):
        for z in range(w):
            out[: m.channels, y, z] = alpha * attended[y // s, z // s]
            gate = torch.sigmoid(conv3x3_ref(m.mask, source, y, z))
            out[m.channels :, y, z] = conv3x3_ref(m.features, source, y, z) * gate
    return out


@pytest.mark.parametrize("size", [(8, 12), (9, 13)])
def test_xtam_message_matches_a_float64_loop(size: tuple[int, int]) -> None:
    g = torch.Generator().manual_seed(1)
    alpha = torch.linspace(-1.5, 2.0, C, dtype=torch.float64).view(1, C, 1, 1)
    m = tiny_xtam(alpha)
    source = torch.randn(2, 5, *size, generator=g, dtype=torch.float64)
    target = torch.randn(2, 6, *size, generator=g, dtype=torch.float64)
    with torch.no_grad():
        out = m(source, target)
        expected = torch.stack([message_ref(m, source[b], target[b]) for b in range(2)])
    assert out.shape == (2, 2 * C, *size)
    assert out[:, :C].abs().max() > 1e-3  # the correlation path is really there
    torch.testing.assert_close(out, expected, atol=1e-10, rtol=0)


def test_xtam_at_zero_alpha_is_exactly_the_self_attention_gate() -> None:
    g = torch.Generator().manual_seed(2)
    m = tiny_xtam()  # α = 0, as initialised
    assert torch.equal(XTAM(5, 6, C).alpha, torch.zeros(1, C, 1, 1))
    source = torch.randn(2, 5, 8, 12, generator=g, dtype=torch.float64)
    target = torch.randn(2, 6, 8, 12, generator=g, dtype=torch.float64)
    with torch.no_grad():
        out = m(source, target)
        gate = m.gate(source)
        correlation = m.correlation(source, target)
    assert correlation.abs().max() > 1e-3  # zero only because of α
    assert torch.equal(out[:, :C], torch.zeros_like(gate))
    assert torch.equal(out[:, C:], gate)


def test_gradients_reach_alpha_at_zero() -> None:
    g = torch.Generator().manual_seed(3)
    m = tiny_xtam()
    source = torch.randn(2, 5, 8, 12, generator=g, dtype=torch.float64)
    target = torch.randn(2, 6, 8, 12, generator=g, dtype=torch.float64)
    m(source, target).sum().backward()
    assert m.alpha.grad is not None and m.alpha.grad.abs().max() > 0
    with torch.no_grad():  # d(sum α_c · xtask_c) / dα_c = sum of xtask_c
        expected = m.correlation(source, target).sum(dim=(0, 2, 3)).view(1, C, 1, 1)
    torch.testing.assert_close(m.alpha.grad, expected, atol=1e-10, rtol=0)


def test_xtam_refuses_maps_of_different_sizes() -> None:
    m = tiny_xtam()
    with pytest.raises(ValueError, match=r"differ in size"):
        m(
            torch.zeros(1, 5, 8, 12, dtype=torch.float64),
            torch.zeros(1, 6, 4, 6, dtype=torch.float64),
        )


def test_mteb_resizes_sources_and_concatenates_messages_in_config_order() -> None:
    torch.manual_seed(4)
    widths = {"a": 6, "b": 5, "c": 4}
    block = MTEB(["a", "b", "c"], widths, channels=C, downscale=2).double().eval()
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for xtam in block.pairs.values():
            xtam.alpha.copy_(torch.randn(1, C, 1, 1, generator=g))
        randomise_norms(block, g)
    maps = {"a": torch.randn(2, 6, 8, 12, generator=g, dtype=torch.float64),
            "b": torch.randn(2, 5, 4, 6, generator=g, dtype=torch.float64),
            "c": torch.randn(2, 4, 8, 12, generator=g, dtype=torch.float64)}  # fmt: skip
    with torch.no_grad():
        out = block.refine(maps)
        b_up = F.interpolate(maps["b"], size=(8, 12), mode="bilinear", align_corners=False)
        messages = [
            block.pairs["b_to_a"](b_up, maps["a"]),
            block.pairs["c_to_a"](maps["c"], maps["a"]),
        ]
        expected = maps["a"] + block.project["a"](torch.cat(messages, 1))
    assert block.project["a"][0].in_channels == 2 * 2 * C
    assert out["b"].shape == maps["b"].shape and out["a"].shape == maps["a"].shape
    torch.testing.assert_close(out["a"], expected, atol=1e-12, rtol=0)
    swapped = maps["a"] + block.project["a"](torch.cat(messages[::-1], 1))
    assert not torch.allclose(out["a"], swapped)  # the order matters, so the check can fail


# --- inside a MultiTaskNet -------------------------------------------------------------------


def mteb_config(tasks: tuple[str, ...], exchange_tasks: list[str]) -> ModelConfig:
    """The tiny test model with one mTEB (width C) between `exchange_tasks`."""
    import drivemtl.models.exchanges.xtam  # noqa: F401  (registers `mteb`)

    exchanges = [{"type": "mteb", "tasks": exchange_tasks, "channels": C}]
    return ModelConfig.model_validate({**tiny_config(tasks).model_dump(), "exchanges": exchanges})


def gate_ref(xtam: XTAM, source: Tensor) -> Tensor:
    """F_f(f) ⊙ σ(F_m(f)) with the functional convs (not the module's forward)."""
    feats = F.conv2d(source, xtam.features.weight, xtam.features.bias, padding=1)
    return feats * torch.sigmoid(F.conv2d(source, xtam.mask.weight, xtam.mask.bias, padding=1))


def project_map_ref(block: nn.Sequential, x: Tensor) -> Tensor:
    """1x1 conv + eval BN + ReLU on a map, written with einsum."""
    conv, bn = block[0], block[1]
    y = torch.einsum("oi,bihw->bohw", conv.weight[:, :, 0, 0], x)
    scale = (bn.weight / torch.sqrt(bn.running_var + bn.eps)).view(1, -1, 1, 1)
    return torch.relu((y - bn.running_mean.view(1, -1, 1, 1)) * scale + bn.bias.view(1, -1, 1, 1))


def test_mteb_in_a_model_runs_between_decoders_and_predictors() -> None:
    torch.manual_seed(0)
    model = build_model(mteb_config(("semantic", "depth"), ["semantic", "depth"])).eval()
    block = model.exchanges[0]
    assert block.modifies == ("task:semantic", "task:depth")
    for tasks in (["semantic"], ["semantic", "depth"]):
        order = [(s.kind, s.path) for s in model.schedule(tasks)]
        exchange = order.index(("exchange", "exchanges.0"))
        assert order.index(("decoder", "heads.semantic")) < exchange
        assert order.index(("decoder", "heads.depth")) < exchange
        assert exchange < order.index(("predictor", "heads.semantic"))
    batch = make_batch(2, ("semantic", "depth"))
    with torch.no_grad():
        out = model(batch)
        plain = model.extract(batch.images, batch.image_sizes)
        f = {t: model.heads[t].decode(plain) for t in ("semantic", "depth")}
        for t, s in (("semantic", "depth"), ("depth", "semantic")):
            gate = gate_ref(block.pairs[f"{s}_to_{t}"], f[s])
            message = torch.cat([torch.zeros_like(gate), gate], 1)  # α = 0: no correlation part
            expected = f[t] + project_map_ref(block.project[t], message)
            assert (expected - f[t]).abs().max() > 1e-4  # the exchange does change the features
            torch.testing.assert_close(out.features.tasks[t], expected, atol=1e-5, rtol=1e-5)
            logits = model.heads[t].predict(expected, plain)
            for key, value in out[t].items():
                torch.testing.assert_close(value, logits[key], atol=1e-5, rtol=1e-5)


def test_mteb_in_a_model_trains_alpha_and_predicts() -> None:
    torch.manual_seed(0)
    model = build_model(mteb_config(("semantic", "depth"), ["semantic", "depth"]))
    batch = make_batch(2, ("semantic", "depth"))
    model.train()
    losses = model.losses(batch)
    (losses["semantic"] + losses["depth"]).backward()
    for pair in ("depth_to_semantic", "semantic_to_depth"):
        grad = model.exchanges[0].pairs[pair].alpha.grad
        assert grad is not None and grad.abs().max() > 0
    preds = model.eval().predict(batch)
    assert preds[0].semantic.shape == tuple(batch.metas[0].orig_size)
    assert preds[0].depth.shape == tuple(batch.metas[0].orig_size)


def test_mteb_names_tasks_it_cannot_exchange() -> None:
    with pytest.raises(ValueError, match=r"exchanges\.0: tasks \['normals'\] are not in"):
        mteb_config(("semantic", "depth"), ["semantic", "normals"])
    cfg = mteb_config(("semantic", "depth", "tagging"), ["semantic", "tagging"])
    with pytest.raises(
        ValueError, match=r"exchanges\.0 \(mteb\): tasks \['tagging'\] have no decoder"
    ):
        build_model(cfg)
    cfg = mteb_config(("semantic", "depth"), ["semantic", "semantic"])
    with pytest.raises(ValueError, match=r"\['semantic'\] are listed more than once"):
        build_model(cfg)
