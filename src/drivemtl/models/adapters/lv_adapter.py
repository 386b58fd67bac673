"""LV-Adapter's Language-to-Vision adapter on P5 (Liang et al., NeurIPS 2022, Sec. 4.2) and the
two ablations of its Table 4.

Text side (paper Eq. 4): every served task t has its own CoOp context v^t (`PromptLearner`,
16 vectors); class i of task t is prompted as [sot] v^t name_i "." [eot] and encoded by CLIP's
text encoder, frozen throughout (requires_grad False, kept in eval mode by `train()`; its weights
stay in the state dict). The tasks' class sets are combined by concatenation, in `tasks` order:
T̂ = L2_NORM([TE(prompts of task 1's classes); TE(prompts of task 2's classes); ...]) is one
set of K = Σ_t C_t text features [K, E], each class prompted with its own task's context (a
class name shared by two tasks appears twice, once per context).

Modes (`mode`), each replacing the adapted level z5 [B, C, H, W]:

- `l2v` (the method, Eq. 5): z̃5 = TransDecoder(q = z5 tokens [B, HW, C], k = v = Linear(T̂)),
  the single linear layer E -> C the paper mentions, applied once and shared by every layer as
  a decoder's memory. `layers` (3) decoder layers after Vaswani et al. [43], as the paper cites:
  self-attention among the P5 tokens (on by default; `self_attention: false` drops it, the
  paper does not discuss it), cross-attention to the text, ReLU FFN, each a residual branch. The
  layers are pre-LN (LayerNorm inside each branch, no final norm) rather than [43]'s post-LN:
  the paper substitutes z5 by z̃5 and leaves the heads unchanged, and pre-LN keeps the identity
  path z5 + Σ branches un-normalised, so z̃5 stays in P5's scale (post-LN would renormalise every
  token). No positional encoding is added (the paper gives none; P5 already carries position
  from the convolutions). Padding positions are queries and self-attention keys like the rest.
- `prompt` (Table 4 "Prompt", DenseCLIP's score maps): class activation maps
  s = <norm(W z5), T̂> [B, K, H, W], W a learnable 1x1 conv C -> E (P5 is not in CLIP's
  embedding space, so it must be projected to compare), concatenated to z5 and reduced by a 1x1
  conv (C + K -> C): z̃5 = Conv([z5, s]). No temperature, no residual: the paper's description.
- `v2l` (Table 4 "V2L", DenseCLIP's post-model prompting [31]): the image context updates the
  text features, which then make the maps of `prompt`. Queries = Linear(T̂) [B, K, C] (E -> C),
  memory = [mean of z5 tokens; z5 tokens] [B, 1 + HW, C] (the global token plus the visual
  tokens, as DenseCLIP feeds its context decoder); `layers` decoder layers as above (here the
  self-attention is among the classes); T̂_b = norm(T̂ + γ ⊙ Linear(LN(q))) per image, with
  DenseCLIP's learnable per-channel γ [E] initialised to 1e-4 so the update starts small;
  s = <norm(W z5), T̂_b> and z̃5 = Conv([z5, s]) as in `prompt`. DenseCLIP's decoder works at
  its own width (256) with LayerNorm + Linear input projections; here it works at P5's width C
  with a single linear layer, the same block as `l2v`, to keep one decoder implementation.

Trainable: the prompts' context vectors and the adapter layers; nothing else the adapter holds.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import Tensor, nn

from drivemtl.config.base import StrictModel
from drivemtl.models.adapters import ADAPTERS, AdapterOptions
from drivemtl.models.adapters.prompts import PromptLearner, Tokenizer
from drivemtl.models.features import PIXEL, Features
from drivemtl.models.language.clip_text import CLIPTextEncoder, load_clip_text
from drivemtl.models.language.tokenizer import CLIPTokenizer, find_vocabulary
from drivemtl.models.stage import FeatureStage, StageContext


class TextEncoderOptions(StrictModel):
    """Architecture of a randomly initialised text encoder (tests, or training without CLIP)."""

    width: int = Field(512, gt=0)
    layers: int = Field(12, gt=0)
    heads: int = Field(8, gt=0)
    context_length: int = Field(77, gt=2)
    vocab_size: int | None = Field(None, gt=0, description="null: the tokenizer's vocabulary size")
    output_dim: int = Field(1024, gt=0)


class LVAdapterOptions(AdapterOptions):
    """LV-Adapter options. The text encoder comes from `clip_weights` (a CLIP checkpoint) or,
    without files, from `text_encoder` (random init, e.g. with a tiny `vocabulary`): exactly one.
    """

    tasks: list[str] = Field(min_length=1, description="tasks whose class names are prompted")
    mode: Literal["l2v", "prompt", "v2l"] = "l2v"
    layers: int = Field(3, gt=0, description="transformer decoder layers (l2v / v2l)")
    heads: int = Field(8, gt=0, description="attention heads; must divide the P5 channels")
    ffn_dim: int = Field(2048, gt=0)
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    self_attention: bool = Field(True, description="self-attention among the queries")
    n_ctx: int = Field(16, gt=0, description="context vectors per task (ignored with ctx_init)")
    ctx_init: str | None = Field(None, description="e.g. 'a photo of a'; null: N(0, 0.02)")
    clip_weights: Path | None = None
    vocabulary: Path | None = Field(None, description="BPE merges file; null: find_vocabulary()")
    text_encoder: TextEncoderOptions | None = None

    @model_validator(mode="after")
    def _one_text_encoder(self) -> LVAdapterOptions:
        if (self.clip_weights is None) == (self.text_encoder is None):
            raise ValueError("give exactly one of clip_weights (a CLIP checkpoint) or text_encoder")
        repeated = sorted({t for t in self.tasks if self.tasks.count(t) > 1})
        if repeated:
            raise ValueError(f"tasks {repeated} are listed more than once")
        return self


class DecoderLayer(nn.Module):
    """Pre-LN transformer decoder layer: [self-attention], cross-attention, FFN, each residual."""

    def __init__(
        self, dim: int, heads: int, ffn_dim: int, self_attention: bool = True, dropout: float = 0.0
    ) -> None:
        super().__init__()
        self.self_attn = (
            nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
            if self_attention
            else None
        )
        self.norm_self = nn.LayerNorm(dim) if self_attention else None
        self.cross_attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.norm_cross = nn.LayerNorm(dim)
        self.norm_ffn = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(
            nn.Linear(dim, ffn_dim), nn.ReLU(), nn.Dropout(dropout), nn.Linear(ffn_dim, dim)
        )
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, memory: Tensor) -> Tensor:
        """Queries x [B, N, D] attend to memory [B, M, D]; returns [B, N, D]."""
        if self.self_attn is not None and self.norm_self is not None:
            h = self.norm_self(x)
            x = x + self.dropout(self.self_attn(h, h, h, need_weights=False)[0])
        h = self.norm_cross(x)
        x = x + self.dropout(self.cross_attn(h, memory, memory, need_weights=False)[0])
        return x + self.dropout(self.ffn(self.norm_ffn(x)))


class TransformerDecoder(nn.Module):
    """A stack of `DecoderLayer`s over one memory."""

    def __init__(self, layers: int, dim: int, heads: int, ffn_dim: int, **kwargs: Any) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            DecoderLayer(dim, heads, ffn_dim, **kwargs) for _ in range(layers)
        )

    def forward(self, x: Tensor, memory: Tensor) -> Tensor:
        for layer in self.layers:
            x = layer(x, memory)
        return x


def class_activation_maps(visual: Tensor, text: Tensor) -> Tensor:
    """<norm(visual), norm(text)>: visual [B, E, H, W], text [K, E] or [B, K, E] -> [B, K, H, W]."""
    visual = F.normalize(visual, dim=1)
    text = F.normalize(text, dim=-1)
    if text.dim() == 2:
        return torch.einsum("behw,ke->bkhw", visual, text)
    return torch.einsum("behw,bke->bkhw", visual, text)


class LVAdapter(FeatureStage):
    """LV-Adapter on one pixel level (module docstring): modes l2v, prompt and v2l."""

    modifies = (PIXEL,)

    def __init__(
        self,
        options: LVAdapterOptions,
        channels: int,
        text_encoder: CLIPTextEncoder,
        tokenizer: Tokenizer,
        task_classes: Mapping[str, Sequence[str]],
    ) -> None:
        super().__init__()
        if channels % options.heads:
            raise ValueError(
                f"lv_adapter: heads ({options.heads}) must divide the pixel channels ({channels})"
            )
        self.level = options.level
        self.mode = options.mode
        self.tasks = tuple(options.tasks)
        text_encoder.requires_grad_(False)
        self.text_encoder = text_encoder.eval()
        embed_dim = int(text_encoder.output_dim)
        embedding, length = text_encoder.token_embedding, int(text_encoder.context_length)
        self.prompts = nn.ModuleDict()
        for task in self.tasks:
            self.prompts[task] = PromptLearner(
                task_classes[task], tokenizer, embedding, length, options.n_ctx,
                options.ctx_init, task,
            )  # fmt: skip
        self.num_classes = sum(len(p.class_names) for p in self.prompts.values())
        decoder = {
            "layers": options.layers, "dim": channels, "heads": options.heads,
            "ffn_dim": options.ffn_dim, "self_attention": options.self_attention,
            "dropout": options.dropout,
        }  # fmt: skip
        self.text_in = nn.Linear(embed_dim, channels) if self.mode != "prompt" else None
        self.decoder = TransformerDecoder(**decoder) if self.mode != "prompt" else None
        if self.mode == "v2l":
            self.text_out = nn.Sequential(nn.LayerNorm(channels), nn.Linear(channels, embed_dim))
            self.gamma = nn.Parameter(torch.full((embed_dim,), 1e-4))
        if self.mode != "l2v":
            self.visual_proj = nn.Conv2d(channels, embed_dim, 1)
            self.fuse = nn.Conv2d(channels + self.num_classes, channels, 1)
        self.register_load_state_dict_post_hook(_refresh_prompts)

    def train(self, mode: bool = True) -> LVAdapter:
        """Train / eval the adapter; the text encoder stays in eval mode."""
        super().train(mode)
        self.text_encoder.eval()
        return self

    def text_features(self) -> Tensor:
        """L2-normalised class text features of every served task, concatenated: [K, E]."""
        parts = [p.class_features(self.text_encoder) for p in self.prompts.values()]
        return F.normalize(torch.cat(parts), dim=-1)

    def adapt(self, z: Tensor, text: Tensor | None = None) -> Tensor:
        """The adapted map [B, C, H, W] of z [B, C, H, W] (text: [K, E], default `text_features`)."""
        text = self.text_features() if text is None else text
        text = text.to(z.dtype)
        b, c, h, w = z.shape
        if self.mode == "l2v":
            assert self.text_in is not None and self.decoder is not None
            tokens = z.flatten(2).transpose(1, 2)
            memory = self.text_in(text).unsqueeze(0).expand(b, -1, -1)
            return self.decoder(tokens, memory).transpose(1, 2).reshape(b, c, h, w)
        if self.mode == "v2l":
            text = self.update_text(z, text)
        maps = class_activation_maps(self.visual_proj(z), text)
        return self.fuse(torch.cat((z, maps), dim=1))

    def update_text(self, z: Tensor, text: Tensor) -> Tensor:
        """v2l: per-image text features [B, K, E] updated by the image context (module doc)."""
        assert self.text_in is not None and self.decoder is not None
        tokens = z.flatten(2).transpose(1, 2)
        memory = torch.cat((tokens.mean(dim=1, keepdim=True), tokens), dim=1)
        queries = self.text_in(text).unsqueeze(0).expand(z.shape[0], -1, -1)
        update = self.text_out(self.decoder(queries, memory))
        return F.normalize(text + self.gamma * update, dim=-1)

    def forward(self, features: Features) -> None:
        index = features.level_index(self.level)
        features.pixel[index] = self.adapt(features.pixel[index])


def _refresh_prompts(module: nn.Module, _incompatible: Any) -> None:
    """After loading a state dict: rebuild the prompts' fixed parts from the loaded embedding."""
    assert isinstance(module, LVAdapter)
    for prompt in module.prompts.values():
        assert isinstance(prompt, PromptLearner)
        prompt.refresh(module.text_encoder.token_embedding)


def build_text_encoder(options: LVAdapterOptions, vocab_size: int) -> CLIPTextEncoder:
    """The CLIP text encoder of `clip_weights`, or a random one of `text_encoder`'s shape."""
    if options.clip_weights is not None:
        encoder = load_clip_text(Path(options.clip_weights))
    else:
        assert options.text_encoder is not None
        shape = options.text_encoder.model_dump()
        shape["vocab_size"] = shape["vocab_size"] or vocab_size
        encoder = CLIPTextEncoder.build(**shape)
    if int(encoder.vocab_size) < vocab_size:
        raise ValueError(
            f"lv_adapter: the text encoder has {encoder.vocab_size} token embeddings, fewer than "
            f"the vocabulary's {vocab_size} tokens"
        )
    return encoder


@ADAPTERS.register("lv_adapter", options=LVAdapterOptions)
def lv_adapter(options: LVAdapterOptions, context: StageContext) -> LVAdapter:
    """LV-Adapter serving `options.tasks`, their class names from the build context."""
    where = context.name or "lv_adapter"
    for task in options.tasks:
        if task not in context.task_classes:
            raise ValueError(
                f"{where}: task {task!r} is not enabled (enabled: {sorted(context.task_classes)})"
            )
        if not context.task_classes[task]:
            raise ValueError(f"{where}: task {task!r} has no class names to prompt")
    tokenizer = CLIPTokenizer(find_vocabulary(options.vocabulary))
    encoder = build_text_encoder(options, int(tokenizer.vocab_size))
    return LVAdapter(options, context.spec.pixel_channels, encoder, tokenizer, context.task_classes)


__all__ = [
    "DecoderLayer",
    "LVAdapter",
    "LVAdapterOptions",
    "TextEncoderOptions",
    "TransformerDecoder",
    "class_activation_maps",
]
