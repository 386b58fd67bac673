"""CLIP's text encoder against an explicit float64 reference, and checkpoint loading by OpenAI names."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

from drivemtl.models.language import CLIPTextEncoder, load_clip_text
from drivemtl.models.weights import WeightsError, is_torchscript_archive

TINY = {"width": 16, "layers": 2, "context_length": 8, "vocab_size": 50, "output_dim": 12}
HEADS = 2


def random_clip_state(
    width: int, layers: int, context_length: int, vocab_size: int, output_dim: int
) -> dict[str, Tensor]:
    """A random state dict with OpenAI's CLIP key names (text part + a stand-in visual part)."""
    g = torch.Generator().manual_seed(width * 100 + layers)

    def rand(*shape: int, scale: float = 0.3, offset: float = 0.0) -> Tensor:
        # float32 values held in float64: a float32 model holds them exactly.
        return (torch.randn(*shape, generator=g) * scale + offset).double()

    state = {
        "token_embedding.weight": rand(vocab_size, width, scale=1.0),
        "positional_embedding": rand(context_length, width),
        "text_projection": rand(width, output_dim),
        "ln_final.weight": rand(width, offset=1.0),
        "ln_final.bias": rand(width),
        "logit_scale": torch.tensor(math.log(1 / 0.07)),
        "visual.conv1.weight": rand(4, 3, 3, 3),
        "visual.attnpool.c_proj.bias": rand(output_dim),
    }
    for i in range(layers):
        p = f"transformer.resblocks.{i}."
        state |= {
            p + "ln_1.weight": rand(width, offset=1.0),
            p + "ln_1.bias": rand(width),
            p + "attn.in_proj_weight": rand(3 * width, width, scale=width**-0.5),
            p + "attn.in_proj_bias": rand(3 * width),
            p + "attn.out_proj.weight": rand(width, width, scale=width**-0.5),
            p + "attn.out_proj.bias": rand(width),
            p + "ln_2.weight": rand(width, offset=1.0),
            p + "ln_2.bias": rand(width),
            p + "mlp.c_fc.weight": rand(4 * width, width, scale=width**-0.5),
            p + "mlp.c_fc.bias": rand(4 * width),
            p + "mlp.c_proj.weight": rand(width, 4 * width, scale=(4 * width) ** -0.5),
            p + "mlp.c_proj.bias": rand(width),
        }
    return state


def layer_norm(x: Tensor, weight: Tensor, bias: Tensor, eps: float = 1e-5) -> Tensor:
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + eps) * weight + bias


def reference_features(state: dict[str, Tensor], x: Tensor, eot: Tensor, heads: int) -> Tensor:
    """Token embeddings [N, L, W] -> [N, D], written out in float64, per layer and per head."""
    s = {k: v.double() for k, v in state.items()}
    x = x.double() + s["positional_embedding"][: x.shape[1]]
    n, length, width = x.shape
    d = width // heads
    mask = torch.zeros(length, length, dtype=torch.float64)
    for i in range(length):
        for j in range(i + 1, length):
            mask[i, j] = -math.inf
    layers = len({k.split(".")[2] for k in s if k.startswith("transformer.resblocks.")})
    for layer in range(layers):
        p = f"transformer.resblocks.{layer}."
        h = layer_norm(x, s[p + "ln_1.weight"], s[p + "ln_1.bias"])
        qkv = h @ s[p + "attn.in_proj_weight"].T + s[p + "attn.in_proj_bias"]
        q, k, v = qkv[..., :width], qkv[..., width : 2 * width], qkv[..., 2 * width :]
        outs = []
        for head in range(heads):
            cols = slice(head * d, (head + 1) * d)
            scores = q[..., cols] @ k[..., cols].transpose(1, 2) / math.sqrt(d) + mask
            outs.append(torch.softmax(scores, dim=-1) @ v[..., cols])
        attn = (
            torch.cat(outs, dim=-1) @ s[p + "attn.out_proj.weight"].T + s[p + "attn.out_proj.bias"]
        )
        x = x + attn
        h = layer_norm(x, s[p + "ln_2.weight"], s[p + "ln_2.bias"])
        h = h @ s[p + "mlp.c_fc.weight"].T + s[p + "mlp.c_fc.bias"]
        h = h * torch.sigmoid(1.702 * h)
        x = x + h @ s[p + "mlp.c_proj.weight"].T + s[p + "mlp.c_proj.bias"]
    x = layer_norm(x, s["ln_final.weight"], s["ln_final.bias"])
    return x[torch.arange(n), eot] @ s["text_projection"]


def random_tokens(n: int, context_length: int, vocab_size: int, seed: int = 0) -> Tensor:
    """Ids with the end token (vocab_size - 1, the largest) at varied positions, zero padded."""
    g = torch.Generator().manual_seed(seed)
    tokens = torch.zeros(n, context_length, dtype=torch.long)
    for row in range(n):
        end = 1 + row % (context_length - 1)
        tokens[row, 0] = vocab_size - 2  # stands in for the start token
        tokens[row, 1:end] = torch.randint(1, vocab_size - 2, (end - 1,), generator=g)
        tokens[row, end] = vocab_size - 1
    return tokens


@pytest.fixture
def tiny_state() -> dict[str, Tensor]:
    return random_clip_state(**TINY)


@pytest.fixture
def tiny(tiny_state: dict[str, Tensor]) -> CLIPTextEncoder:
    return CLIPTextEncoder.from_state_dict(tiny_state, heads=HEADS).double()


def test_architecture_inferred(tiny: CLIPTextEncoder) -> None:
    assert (tiny.width, tiny.context_length, tiny.vocab_size, tiny.output_dim) == (16, 8, 50, 12)
    assert (tiny.layers, tiny.heads) == (2, HEADS)
    assert tuple(tiny.token_embedding.weight.shape) == (50, 16)
    assert tuple(tiny.text_projection.shape) == (16, 12)


def test_matches_float64_reference(tiny: CLIPTextEncoder, tiny_state: dict[str, Tensor]) -> None:
    tokens = random_tokens(6, 8, 50)
    x = tiny_state["token_embedding.weight"][tokens]
    eot = tokens.argmax(-1)
    expected = reference_features(tiny_state, x, eot, HEADS)
    torch.testing.assert_close(tiny.encode_embeddings(x, eot), expected, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(tiny.encode(tokens), expected, rtol=1e-10, atol=1e-10)


def test_encode_is_encode_embeddings_at_argmax(tiny: CLIPTextEncoder) -> None:
    tokens = random_tokens(5, 8, 50, seed=1)
    via_embeddings = tiny.encode_embeddings(tiny.token_embedding(tokens), tokens.argmax(-1))
    torch.testing.assert_close(tiny.encode(tokens), via_embeddings, rtol=0, atol=0)
    torch.testing.assert_close(tiny(tokens), via_embeddings, rtol=0, atol=0)


def test_causal_mask(tiny: CLIPTextEncoder) -> None:
    torch.manual_seed(0)
    x = torch.randn(1, 8, 16, dtype=torch.float64)
    for k in range(7):
        changed = x.clone()
        changed[:, k + 1 :] = torch.randn(1, 7 - k, 16, dtype=torch.float64)
        for position in range(8):
            index = torch.tensor([position])
            same = torch.allclose(
                tiny.encode_embeddings(x, index), tiny.encode_embeddings(changed, index)
            )
            assert same == (position <= k), (k, position)


def test_shorter_sequence_is_the_prefix(tiny: CLIPTextEncoder) -> None:
    x = torch.randn(3, 8, 16, dtype=torch.float64)
    eot = torch.tensor([0, 2, 4])
    torch.testing.assert_close(
        tiny.encode_embeddings(x[:, :5], eot), tiny.encode_embeddings(x, eot)
    )
    with pytest.raises(ValueError, match=r"expected token embeddings \[N, <= 8, 16\]"):
        tiny.encode_embeddings(torch.randn(1, 9, 16, dtype=torch.float64), torch.tensor([0]))


def test_build_and_freeze() -> None:
    model = CLIPTextEncoder.build(**TINY, heads=HEADS)
    assert model.training and all(p.requires_grad for p in model.parameters())
    out = model.encode(random_tokens(2, 8, 50))
    assert out.shape == (2, 12) and torch.isfinite(out).all()
    assert model.freeze() is model
    assert not model.training and not any(p.requires_grad for p in model.parameters())


def test_state_dict_keys_are_openais(tiny: CLIPTextEncoder, tiny_state: dict[str, Tensor]) -> None:
    text_keys = {k for k in tiny_state if not k.startswith("visual.") and k != "logit_scale"}
    assert set(tiny.state_dict()) == text_keys


def test_real_clip_shapes() -> None:
    model = CLIPTextEncoder.build()
    assert (model.width, model.layers, model.heads) == (512, 12, 8)
    assert (model.context_length, model.vocab_size, model.output_dim) == (77, 49408, 1024)


class _OpenAINamed(nn.Module):
    """A module whose state dict is `state` under the same dotted names (like OpenAI's JIT CLIP)."""

    def __init__(self, state: dict[str, Tensor]) -> None:
        super().__init__()
        for key, value in state.items():
            *path, name = key.split(".")
            owner: nn.Module = self
            for part in path:
                if not hasattr(owner, part):
                    owner.add_module(part, nn.Module())
                owner = getattr(owner, part)
            owner.register_buffer(name, value.clone())

    def forward(self) -> Tensor:
        return self.text_projection.sum()


def _checkpoint_state() -> dict[str, Tensor]:
    # width 128: CLIP's rule gives 128 // 64 = 2 heads without being told.
    state = random_clip_state(128, 2, 8, 50, 24)
    state = {k: v.float() for k, v in state.items()}
    # OpenAI's JIT archives carry these scalars next to the tensors.
    state |= {"input_resolution": torch.tensor(224), "context_length": torch.tensor(8)}
    return state | {"vocab_size": torch.tensor(50)}


@pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")
@pytest.mark.parametrize("kind", ["pt", "torchscript"])
def test_checkpoint_round_trip(tmp_path: Path, kind: str) -> None:
    state = _checkpoint_state()
    path = tmp_path / "clip.pt"
    if kind == "pt":
        torch.save(state, path)
    else:
        torch.jit.save(torch.jit.script(_OpenAINamed(state)), str(path))
    assert is_torchscript_archive(path) == (kind == "torchscript")
    model = load_clip_text(path)
    assert (model.width, model.layers, model.heads, model.output_dim) == (128, 2, 2, 24)
    own = model.state_dict()
    for key, value in own.items():
        assert torch.equal(value, state[key]), key
    tokens = random_tokens(4, 8, 50, seed=2)
    expected = reference_features(
        state, state["token_embedding.weight"][tokens], tokens.argmax(-1), 2
    )
    torch.testing.assert_close(model.double().encode(tokens), expected, rtol=1e-5, atol=1e-5)


def test_half_checkpoint_loads_as_float32(tiny_state: dict[str, Tensor]) -> None:
    half = {k: v.half() for k, v in tiny_state.items()}
    model = CLIPTextEncoder.from_state_dict(half, heads=HEADS)
    assert model.text_projection.dtype == torch.float32
    assert torch.equal(model.text_projection, half["text_projection"].float())


def _broken(state: dict[str, Tensor], kind: str) -> dict[str, Tensor]:
    state = dict(state)
    if kind == "other model":
        return {"conv1.weight": torch.zeros(4, 3, 3, 3), "fc.weight": torch.zeros(10, 4)}
    if kind == "shape":
        state["ln_final.weight"] = torch.ones(7)
    elif kind == "missing":
        del state["transformer.resblocks.1.mlp.c_fc.bias"]
    elif kind == "unknown":
        state["transformer.extra"] = torch.zeros(3)
    elif kind == "gap":
        state = {k.replace("resblocks.1.", "resblocks.2."): v for k, v in state.items()}
    return state


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("other model", r"not a CLIP text encoder: no 'token_embedding\.weight' tensor"),
        ("shape", r"1 shape mismatches \(e\.g\. ln_final\.weight \(7,\) vs model \(16,\)\)"),
        (
            "missing",
            r"1 model tensors missing \(e\.g\. transformer\.resblocks\.1\.mlp\.c_fc\.bias\)",
        ),
        ("unknown", r"1 unknown tensors \(e\.g\. transformer\.extra\)"),
        ("gap", r"transformer\.resblocks\.1\.\* missing \(blocks \[0, 2\]\)"),
    ],
)
def test_bad_checkpoints_name_the_file_and_key(
    tmp_path: Path, tiny_state: dict[str, Tensor], kind: str, message: str
) -> None:
    path = tmp_path / "broken.pt"
    torch.save(_broken(tiny_state, kind), path)
    with pytest.raises(WeightsError, match=message) as info:
        load_clip_text(path, heads=HEADS)
    assert str(info.value).startswith(str(path)) and "\n" not in str(info.value)


def test_heads_rule_needs_width_multiple_of_64(tiny_state: dict[str, Tensor]) -> None:
    with pytest.raises(WeightsError, match="width 16 is not a multiple of 64"):
        CLIPTextEncoder.from_state_dict(tiny_state)


def test_unreadable_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "garbage.pt"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match=r"garbage\.pt"):
        load_clip_text(path)
