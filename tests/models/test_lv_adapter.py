"""LV-Adapter: every block against float64 references, and a tiny model that trains only what the
paper trains (prompt contexts and adapter layers; the CLIP text encoder stays bit-identical)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from batches import make_batch, tiny_config
from torch import Tensor, nn

from drivemtl.models import build_model
from drivemtl.models.adapters.lv_adapter import (
    DecoderLayer,
    LVAdapter,
    LVAdapterOptions,
    class_activation_maps,
)
from drivemtl.models.config import ModelConfig
from drivemtl.models.language import CLIPTextEncoder, CLIPTokenizer, write_vocabulary

TASKS = ("semantic", "drivable")
TINY_TEXT = {"width": 16, "layers": 1, "heads": 2, "context_length": 24, "output_dim": 12}
MERGES = [("r", "o"), ("ro", "a"), ("roa", "d</w>"), ("c", "a"), ("ca", "r</w>")]


@pytest.fixture
def vocab(tmp_path: Path) -> Path:
    return write_vocabulary(tmp_path / "vocab.txt.gz", MERGES)


# --- float64 references ----------------------------------------------------------------------


def ref_layer_norm(x: Tensor, norm: nn.LayerNorm) -> Tensor:
    mean = x.mean(dim=-1, keepdim=True)
    var = ((x - mean) ** 2).mean(dim=-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + norm.eps) * norm.weight + norm.bias


def ref_attention(queries: Tensor, keys: Tensor, mha: nn.MultiheadAttention) -> Tensor:
    """Multi-head attention of one item: queries [N, D], keys = values [M, D], loop per head."""
    d = queries.shape[-1] // mha.num_heads
    wq, wk, wv = mha.in_proj_weight.chunk(3)
    bq, bk, bv = mha.in_proj_bias.chunk(3)
    q, k, v = queries @ wq.T + bq, keys @ wk.T + bk, keys @ wv.T + bv
    heads = []
    for h in range(mha.num_heads):
        cols = slice(h * d, (h + 1) * d)
        scores = q[:, cols] @ k[:, cols].T / math.sqrt(d)
        weights = torch.exp(scores - scores.max(dim=1, keepdim=True).values)
        heads.append(weights / weights.sum(dim=1, keepdim=True) @ v[:, cols])
    return torch.cat(heads, dim=1) @ mha.out_proj.weight.T + mha.out_proj.bias


def ref_decoder_layer(x: Tensor, memory: Tensor, layer: DecoderLayer) -> Tensor:
    """Pre-LN decoder layer of one item: x [N, D], memory [M, D]."""
    if layer.self_attn is not None:
        h = ref_layer_norm(x, layer.norm_self)
        x = x + ref_attention(h, h, layer.self_attn)
    x = x + ref_attention(ref_layer_norm(x, layer.norm_cross), memory, layer.cross_attn)
    first, _, _, second = layer.ffn
    h = ref_layer_norm(x, layer.norm_ffn) @ first.weight.T + first.bias
    return x + h.clamp(min=0) @ second.weight.T + second.bias


def ref_maps(visual: Tensor, text: Tensor) -> Tensor:
    """Cosine similarity of every pixel [E] with every class [E], by explicit loops."""
    b, _, h, w = visual.shape
    k = text.shape[-2]
    out = torch.zeros(b, k, h, w, dtype=visual.dtype)
    for i in range(b):
        t = text if text.dim() == 2 else text[i]
        for c in range(k):
            for y in range(h):
                for x in range(w):
                    p = visual[i, :, y, x]
                    out[i, c, y, x] = (p @ t[c]) / (p.norm() * t[c].norm())
    return out


def ref_conv1x1(x: Tensor, conv: nn.Conv2d) -> Tensor:
    return torch.einsum("oc,bchw->bohw", conv.weight[:, :, 0, 0], x) + conv.bias[:, None, None]


# --- blocks ----------------------------------------------------------------------------------


@pytest.mark.parametrize("self_attention", [False, True])
def test_decoder_layer_matches_explicit_attention(self_attention: bool) -> None:
    torch.manual_seed(0)
    layer = DecoderLayer(8, 2, 16, self_attention=self_attention).double()
    for p in layer.parameters():  # non-trivial norms and biases
        nn.init.normal_(p, 0.0, 0.5)
    x, memory = torch.randn(2, 5, 8, dtype=torch.float64), torch.randn(2, 3, 8, dtype=torch.float64)
    out = layer(x, memory)
    for i in range(2):
        assert torch.allclose(out[i], ref_decoder_layer(x[i], memory[i], layer), atol=1e-10)


def test_class_activation_maps_are_normalised_dot_products() -> None:
    torch.manual_seed(0)
    visual = torch.randn(2, 6, 3, 4, dtype=torch.float64)
    text = torch.randn(5, 6, dtype=torch.float64)
    assert torch.allclose(class_activation_maps(visual, text), ref_maps(visual, text), atol=1e-12)
    per_image = torch.randn(2, 5, 6, dtype=torch.float64)
    maps = class_activation_maps(visual, per_image)
    assert torch.allclose(maps, ref_maps(visual, per_image), atol=1e-12)


def tiny_adapter(vocab: Path, mode: str, **options) -> LVAdapter:
    """An LVAdapter on 8 channels serving two tasks of 3 and 2 classes, in float64."""
    torch.manual_seed(0)
    tokenizer = CLIPTokenizer(vocab)
    encoder = CLIPTextEncoder.build(vocab_size=tokenizer.vocab_size, **TINY_TEXT)
    opts = LVAdapterOptions(
        type="lv_adapter", tasks=["a", "b"], mode=mode, layers=2, heads=2, ffn_dim=16, n_ctx=3,
        text_encoder=TINY_TEXT, **options,
    )  # fmt: skip
    classes = {"a": ("road", "car", "sky"), "b": ("direct", "background")}
    adapter = LVAdapter(opts, 8, encoder, tokenizer, classes).double()
    for name, p in adapter.named_parameters():
        if not name.startswith(("text_encoder.", "prompts.")):
            nn.init.normal_(p, 0.0, 0.3)
    return adapter


def test_text_features_concatenate_each_tasks_classes_with_its_own_context(vocab: Path) -> None:
    adapter = tiny_adapter(vocab, "l2v")
    text = adapter.text_features()
    assert text.shape == (5, 12) and adapter.num_classes == 5
    assert torch.allclose(text.norm(dim=1), torch.ones(5, dtype=torch.float64))
    encoder = adapter.text_encoder
    parts = []
    for task in ("a", "b"):
        x, eot = adapter.prompts[task]()
        parts.append(encoder.encode_embeddings(x, eot))
    reference = torch.cat(parts)
    assert torch.allclose(text, reference / reference.norm(dim=1, keepdim=True), atol=1e-12)
    # the two tasks' contexts differ, so "the same" prompt position gets different inputs
    assert not torch.equal(adapter.prompts["a"].context, adapter.prompts["b"].context)


@pytest.mark.parametrize("self_attention", [True, False])
def test_l2v_is_the_decoder_over_p5_tokens_with_projected_text_keys(
    vocab: Path, self_attention: bool
) -> None:
    adapter = tiny_adapter(vocab, "l2v", self_attention=self_attention)
    z = torch.randn(2, 8, 2, 3, dtype=torch.float64)
    text = F.normalize(torch.randn(5, 12, dtype=torch.float64), dim=1)
    out = adapter.adapt(z, text)
    assert out.shape == z.shape
    memory = text @ adapter.text_in.weight.T + adapter.text_in.bias
    for i in range(2):
        tokens = z[i].reshape(8, 6).T
        for layer in adapter.decoder.layers:
            tokens = ref_decoder_layer(tokens, memory, layer)
        assert torch.allclose(out[i], tokens.T.reshape(8, 2, 3), atol=1e-10)


def test_prompt_mode_concatenates_class_maps_and_reduces_them(vocab: Path) -> None:
    adapter = tiny_adapter(vocab, "prompt")
    assert adapter.decoder is None and adapter.text_in is None
    z = torch.randn(2, 8, 2, 3, dtype=torch.float64)
    text = F.normalize(torch.randn(5, 12, dtype=torch.float64), dim=1)
    maps = ref_maps(ref_conv1x1(z, adapter.visual_proj), text)
    expected = ref_conv1x1(torch.cat((z, maps), dim=1), adapter.fuse)
    assert torch.allclose(adapter.adapt(z, text), expected, atol=1e-10)


def test_v2l_updates_text_by_the_image_then_uses_its_maps(vocab: Path) -> None:
    adapter = tiny_adapter(vocab, "v2l")
    z = torch.randn(2, 8, 2, 3, dtype=torch.float64)
    text = F.normalize(torch.randn(5, 12, dtype=torch.float64), dim=1)
    norm, linear = adapter.text_out
    per_image = []
    for i in range(2):
        tokens = z[i].reshape(8, 6).T
        memory = torch.cat((tokens.mean(dim=0, keepdim=True), tokens))
        q = text @ adapter.text_in.weight.T + adapter.text_in.bias
        for layer in adapter.decoder.layers:
            q = ref_decoder_layer(q, memory, layer)
        updated = text + adapter.gamma * (ref_layer_norm(q, norm) @ linear.weight.T + linear.bias)
        per_image.append(updated / updated.norm(dim=1, keepdim=True))
    per_image = torch.stack(per_image)
    assert torch.allclose(adapter.update_text(z, text), per_image, atol=1e-10)
    maps = ref_maps(ref_conv1x1(z, adapter.visual_proj), per_image)
    expected = ref_conv1x1(torch.cat((z, maps), dim=1), adapter.fuse)
    assert torch.allclose(adapter.adapt(z, text), expected, atol=1e-10)
    tokenizer = CLIPTokenizer(vocab)
    encoder = CLIPTextEncoder.build(vocab_size=tokenizer.vocab_size, **TINY_TEXT)
    fresh = LVAdapter(adapter_options(vocab, "v2l"), 8, encoder, tokenizer, {"a": ("road",)})
    assert torch.equal(fresh.gamma, torch.full((12,), 1e-4))  # DenseCLIP's start


# --- in a model ------------------------------------------------------------------------------


def adapter_options(vocab: Path, mode: str, **extra) -> LVAdapterOptions:
    return LVAdapterOptions.model_validate(adapter_section(vocab, mode, tasks=["a"], **extra))


def adapter_section(vocab: Path, mode: str, **extra) -> dict:
    return {
        "type": "lv_adapter", "tasks": list(TASKS), "mode": mode, "layers": 2, "heads": 2,
        "ffn_dim": 32, "n_ctx": 4, "vocabulary": str(vocab), "text_encoder": TINY_TEXT, **extra,
    }  # fmt: skip


def tiny_model(vocab: Path, mode: str, seed: int = 0, **extra):
    torch.manual_seed(seed)
    cfg = ModelConfig.model_validate(
        {**tiny_config(TASKS).model_dump(), "adapters": [adapter_section(vocab, mode, **extra)]}
    )
    return build_model(cfg)


@pytest.mark.parametrize("mode", ["l2v", "prompt", "v2l"])
def test_each_mode_changes_p5_only_and_trains_contexts_and_layers(vocab: Path, mode: str) -> None:
    model = tiny_model(vocab, mode)
    adapter = model.adapters[0]
    assert isinstance(adapter, LVAdapter) and adapter.num_classes == 19 + 3
    batch = make_batch(2, TASKS)
    with torch.no_grad():
        out = model.eval()(batch)
        plain = model.extract(batch.images, batch.image_sizes)
    p5 = plain.level_index("p5")
    for level, (adapted, before) in enumerate(zip(out.features.pixel, plain.pixel, strict=True)):
        if level == p5:
            assert torch.allclose(adapted, adapter.adapt(before), atol=1e-6)
            assert not torch.allclose(adapted, before)
        else:
            assert torch.equal(adapted, before)
    model.train()
    assert not adapter.text_encoder.training
    losses = model.losses(batch, list(TASKS))
    sum(losses.values()).backward()
    for name, p in adapter.named_parameters():
        if name.startswith("text_encoder."):
            assert p.grad is None and not p.requires_grad, name
        else:
            assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_frozen_means_frozen(vocab: Path) -> None:
    model = tiny_model(vocab, "l2v")
    adapter = model.adapters[0]
    encoder_names = {
        f"adapters.0.text_encoder.{n}" for n, _ in adapter.text_encoder.named_parameters()
    }
    assert encoder_names and encoder_names <= model.fixed_parameter_names()
    assert encoder_names <= set(model.state_dict())  # the model's own weights, kept
    encoder_before = {k: v.clone() for k, v in adapter.text_encoder.state_dict().items()}
    trainable = {n: p.detach().clone() for n, p in adapter.named_parameters() if p.requires_grad}
    assert {"prompts.semantic.context", "prompts.drivable.context"} <= set(trainable)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    batch = make_batch(2, TASKS)
    model.train()
    for _ in range(3):
        optimizer.zero_grad()
        sum(model.losses(batch, list(TASKS)).values()).backward()
        optimizer.step()
    assert not adapter.text_encoder.training
    for key, value in adapter.text_encoder.state_dict().items():
        assert torch.equal(value, encoder_before[key]), key
    for name, p in adapter.named_parameters():
        if name in trainable:
            assert not torch.equal(p.detach(), trainable[name]), f"{name} did not train"


def test_frozen_contexts_are_encoded_once(vocab: Path) -> None:
    model = tiny_model(vocab, "prompt")
    adapter = model.adapters[0]
    calls = []
    encode = adapter.text_encoder.encode_embeddings
    adapter.text_encoder.encode_embeddings = lambda x, eot: calls.append(len(x)) or encode(x, eot)
    for prompt in adapter.prompts.values():
        prompt.context.requires_grad_(False)
    batch = make_batch(1, TASKS)
    model.train()
    for _ in range(3):
        sum(model.losses(batch, list(TASKS)).values()).backward()
    assert calls == [19, 3]  # once per task


def test_loading_a_state_dict_rebuilds_the_fixed_prompt_parts(vocab: Path) -> None:
    source, target = tiny_model(vocab, "l2v", seed=0), tiny_model(vocab, "l2v", seed=1)
    with torch.no_grad():
        expected = source.adapters[0].text_features()
        assert not torch.allclose(target.adapters[0].text_features(), expected)
        target.load_state_dict(source.state_dict())
        assert torch.allclose(target.adapters[0].text_features(), expected, atol=1e-6)


def test_text_encoder_from_a_clip_checkpoint(vocab: Path, tmp_path: Path) -> None:
    torch.manual_seed(3)
    vocab_size = CLIPTokenizer(vocab).vocab_size
    clip = CLIPTextEncoder.build(64, 1, 1, 24, vocab_size, 12)
    torch.save(clip.state_dict(), tmp_path / "clip.pt")
    options = adapter_section(vocab, "l2v", clip_weights=str(tmp_path / "clip.pt"))
    del options["text_encoder"]
    torch.manual_seed(0)
    cfg = tiny_config(TASKS).model_dump()
    model = build_model(ModelConfig.model_validate({**cfg, "adapters": [options]}))
    loaded = model.adapters[0].text_encoder.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in clip.state_dict().items())


def test_option_and_build_errors(vocab: Path) -> None:
    cfg = tiny_config(TASKS).model_dump()
    with pytest.raises(ValueError, match="exactly one of clip_weights"):
        LVAdapterOptions.model_validate({**adapter_section(vocab, "l2v"), "clip_weights": "x.pt"})
    with pytest.raises(ValueError, match="exactly one of clip_weights"):
        LVAdapterOptions.model_validate({**adapter_section(vocab, "l2v"), "text_encoder": None})
    with pytest.raises(ValueError, match=r"tasks \['semantic'\] are listed more than once"):
        LVAdapterOptions.model_validate(adapter_section(vocab, "l2v", tasks=["semantic"] * 2))
    with pytest.raises(ValueError, match=r"adapters\.0\.mode"):
        ModelConfig.model_validate({**cfg, "adapters": [adapter_section(vocab, "both")]})
    bad = ModelConfig.model_validate(
        {**cfg, "adapters": [adapter_section(vocab, "l2v", tasks=["semantic", "lanes"])]}
    )
    with pytest.raises(ValueError, match=r"adapters\.0: task 'lanes' is not enabled"):
        build_model(bad)
    bad = ModelConfig.model_validate({**cfg, "adapters": [adapter_section(vocab, "l2v", heads=3)]})
    with pytest.raises(ValueError, match=r"heads \(3\) must divide the pixel channels \(16\)"):
        build_model(bad)
    short = {**TINY_TEXT, "context_length": 12}
    bad = ModelConfig.model_validate(
        {**cfg, "adapters": [adapter_section(vocab, "l2v", text_encoder=short)]}
    )
    with pytest.raises(ValueError, match=r"class name '\w+' of task 'semantic' is too long"):
        build_model(bad)
