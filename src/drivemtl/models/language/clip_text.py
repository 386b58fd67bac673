"""CLIP's text encoder: a causal pre-LayerNorm transformer read out at the end token.

Written from the description of OpenAI's CLIP (width 512, 12 layers, 8 heads, context 77, vocabulary
49408, QuickGELU, 4x MLP, final LayerNorm, text projection). The module's state-dict keys are
OpenAI's (``token_embedding.weight``, ``positional_embedding``, ``transformer.resblocks.{i}.*``,
``ln_final.*``, ``text_projection``), so the text part of a released checkpoint loads strictly.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from drivemtl.models.weights import WeightsError, fit_problems, read_state_dict

# Tensors of a whole CLIP checkpoint that are not the text encoder's.
IGNORED_PREFIXES = ("visual.",)
IGNORED_KEYS = frozenset({"input_resolution", "context_length", "vocab_size", "logit_scale"})
_BLOCK_KEY = re.compile(r"^transformer\.resblocks\.(\d+)\.")
HEAD_WIDTH = 64  # CLIP's rule: heads = width // 64


class QuickGELU(nn.Module):
    """CLIP's GELU approximation ``x * sigmoid(1.702 x)``."""

    def forward(self, x: Tensor) -> Tensor:
        return x * torch.sigmoid(1.702 * x)


class CausalSelfAttention(nn.Module):
    """Multi-head self-attention with a causal mask; ``nn.MultiheadAttention``'s parameter names."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        if heads < 1 or width % heads:
            raise ValueError(f"width {width} is not divisible into {heads} attention heads")
        self.heads = heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * width, width))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * width))
        self.out_proj = nn.Linear(width, width)

    def forward(self, x: Tensor) -> Tensor:
        """x [N, L, width] -> [N, L, width]; position i attends to positions <= i."""
        n, length, width = x.shape
        q, k, v = F.linear(x, self.in_proj_weight, self.in_proj_bias).chunk(3, dim=-1)
        q, k, v = (t.reshape(n, length, self.heads, -1).transpose(1, 2) for t in (q, k, v))
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.out_proj(out.transpose(1, 2).reshape(n, length, width))


class ResidualAttentionBlock(nn.Module):
    """Pre-LN block: ``x + attn(ln_1(x))`` then ``x + mlp(ln_2(x))`` (MLP 4x, QuickGELU)."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(width)
        self.attn = CausalSelfAttention(width, heads)
        self.ln_2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(
            OrderedDict(
                c_fc=nn.Linear(width, 4 * width),
                gelu=QuickGELU(),
                c_proj=nn.Linear(4 * width, width),
            )
        )

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    """A stack of residual attention blocks (``resblocks``, OpenAI's name)."""

    def __init__(self, width: int, layers: int, heads: int) -> None:
        super().__init__()
        self.width = width
        self.layers = layers
        self.heads = heads
        self.resblocks = nn.Sequential(
            *(ResidualAttentionBlock(width, heads) for _ in range(layers))
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.resblocks(x)


class CLIPTextEncoder(nn.Module):
    """CLIP's causal text transformer; the feature of a text is taken at its end token.

    Not frozen by default (freezing is the user's choice: ``freeze()``). Weights loaded from a
    checkpoint keep this module's dtype (float32 unless converted), whatever the file's dtype.
    """

    def __init__(
        self,
        width: int,
        layers: int,
        heads: int,
        context_length: int,
        vocab_size: int,
        output_dim: int,
    ) -> None:
        super().__init__()
        self.width = width
        self.layers = layers
        self.heads = heads
        self.context_length = context_length
        self.output_dim = output_dim
        self.vocab_size = vocab_size
        self.token_embedding = nn.Embedding(vocab_size, width)
        self.positional_embedding = nn.Parameter(torch.empty(context_length, width))
        self.transformer = Transformer(width, layers, heads)
        self.ln_final = nn.LayerNorm(width)
        self.text_projection = nn.Parameter(torch.empty(width, output_dim))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """CLIP's initialisation (normal, with standard deviations scaled by width and depth)."""
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.positional_embedding, std=0.01)
        attn_std = self.width**-0.5
        proj_std = attn_std * (2 * self.layers) ** -0.5
        fc_std = (2 * self.width) ** -0.5
        for block in self.transformer.resblocks:
            nn.init.normal_(block.attn.in_proj_weight, std=attn_std)
            nn.init.zeros_(block.attn.in_proj_bias)
            nn.init.normal_(block.attn.out_proj.weight, std=proj_std)
            nn.init.zeros_(block.attn.out_proj.bias)
            nn.init.normal_(block.mlp.c_fc.weight, std=fc_std)
            nn.init.normal_(block.mlp.c_proj.weight, std=proj_std)
        nn.init.normal_(self.text_projection, std=attn_std)

    def encode_embeddings(self, x: Tensor, eot_index: Tensor) -> Tensor:
        """Token embeddings x [N, L, width] -> features [N, output_dim] at `eot_index` [N] (long).

        The positional embedding is added here. L is normally `context_length`; a shorter L gives
        the same features (the mask is causal), a longer one is an error.
        """
        if x.dim() != 3 or x.shape[-1] != self.width or x.shape[1] > self.context_length:
            raise ValueError(
                f"expected token embeddings [N, <= {self.context_length}, {self.width}], "
                f"got {tuple(x.shape)}"
            )
        if eot_index.shape != (x.shape[0],):
            raise ValueError(f"expected eot_index [{x.shape[0]}], got {tuple(eot_index.shape)}")
        x = x + self.positional_embedding[: x.shape[1]].to(x.dtype)
        x = self.ln_final(self.transformer(x))
        rows = torch.arange(x.shape[0], device=x.device)
        return x[rows, eot_index.long()] @ self.text_projection.to(x.dtype)

    def encode(self, tokens: Tensor) -> Tensor:
        """Token ids [N, L] -> features [N, output_dim]; the end token is the largest id."""
        if tokens.dim() != 2:
            raise ValueError(f"expected token ids [N, L], got {tuple(tokens.shape)}")
        x = self.token_embedding(tokens).to(self.positional_embedding.dtype)
        return self.encode_embeddings(x, tokens.argmax(dim=-1))

    def forward(self, tokens: Tensor) -> Tensor:
        """Same as `encode`."""
        return self.encode(tokens)

    def freeze(self) -> CLIPTextEncoder:
        """Stop gradients to every parameter and switch to eval mode; returns self."""
        self.requires_grad_(False)
        return self.eval()

    @classmethod
    def build(
        cls,
        width: int = 512,
        layers: int = 12,
        heads: int = 8,
        context_length: int = 77,
        vocab_size: int = 49408,
        output_dim: int = 1024,
    ) -> CLIPTextEncoder:
        """A randomly initialised encoder (CLIP's initialisation); defaults are CLIP RN50's."""
        return cls(width, layers, heads, context_length, vocab_size, output_dim)

    @classmethod
    def from_state_dict(
        cls,
        state: Mapping[str, Tensor],
        heads: int | None = None,
        source: str = "state dict",
    ) -> CLIPTextEncoder:
        """The text encoder of a whole CLIP state dict, architecture inferred from the tensors.

        ``visual.*``, ``logit_scale`` and the scalar keys of OpenAI's JIT archives are ignored;
        everything else must fit exactly (strict), otherwise a one-line `WeightsError` names
        `source` and the first offending key. `heads` is not visible in the tensors: CLIP's rule
        ``width // 64`` unless given.
        """
        text = {
            k: v
            for k, v in state.items()
            if not k.startswith(IGNORED_PREFIXES) and k not in IGNORED_KEYS
        }
        shapes = infer_text_architecture(text, source)
        if heads is None:
            heads = shapes["width"] // HEAD_WIDTH
            if heads < 1 or shapes["width"] % HEAD_WIDTH:
                raise WeightsError(
                    f"{source}: width {shapes['width']} is not a multiple of {HEAD_WIDTH}; "
                    "give the number of attention heads explicitly"
                )
        model = cls(heads=heads, **shapes)
        problems = fit_problems(model.state_dict(), text)
        if problems:
            raise WeightsError(f"{source}: not a CLIP text encoder: {'; '.join(problems)}")
        model.load_state_dict(text, strict=True)
        return model


def _tensor(state: Mapping[str, Tensor], key: str, ndim: int, source: str) -> Tensor:
    if key not in state:
        raise WeightsError(f"{source}: not a CLIP text encoder: no {key!r} tensor")
    value = state[key]
    if value.dim() != ndim:
        raise WeightsError(
            f"{source}: {key} should have {ndim} dimensions, got shape {tuple(value.shape)}"
        )
    return value


def infer_text_architecture(
    state: Mapping[str, Tensor], source: str = "state dict"
) -> dict[str, int]:
    """width, layers, context_length, vocab_size and output_dim of a CLIP text state dict."""
    vocab_size, width = _tensor(state, "token_embedding.weight", 2, source).shape
    context_length = _tensor(state, "positional_embedding", 2, source).shape[0]
    output_dim = _tensor(state, "text_projection", 2, source).shape[1]
    blocks = {int(m.group(1)) for k in state if (m := _BLOCK_KEY.match(k))}
    if not blocks:
        raise WeightsError(
            f"{source}: not a CLIP text encoder: no 'transformer.resblocks.0.*' tensors"
        )
    if blocks != set(range(len(blocks))):
        missing = min(set(range(max(blocks) + 1)) - blocks)
        raise WeightsError(
            f"{source}: transformer.resblocks.{missing}.* missing (blocks {sorted(blocks)})"
        )
    return {
        "width": int(width),
        "layers": len(blocks),
        "context_length": int(context_length),
        "vocab_size": int(vocab_size),
        "output_dim": int(output_dim),
    }


def load_clip_text(path: Path | str, heads: int | None = None) -> CLIPTextEncoder:
    """The text encoder of a CLIP checkpoint (OpenAI JIT archive or plain state dict)."""
    state = read_state_dict(path, torchscript=True)
    return CLIPTextEncoder.from_state_dict(state, heads=heads, source=str(path))
