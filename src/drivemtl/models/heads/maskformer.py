"""MaskFormer (Cheng et al. 2021): per-pixel embeddings, a query decoder and mask classification.

An FPN-style pixel decoder brings P2..P5 to stride 4 and projects the result to `mask_dim`
per-pixel embeddings; the coarsest level (P5), with a sine positional encoding, is the memory of a
DETR transformer decoder over `num_queries` learnable queries. Every decoder layer's output goes
through a shared class head (K + 1 logits, the last one "no object") and a 3-layer mask-embedding
MLP, and the masks are the dot products of the mask embeddings with the per-pixel embeddings at
stride 4. The intermediate layers' predictions are kept for deep supervision.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from drivemtl.models.features import Features, FeatureSpec
from drivemtl.models.heads.dense_decoder import gn_groups


@dataclass
class MaskFormerOutputs:
    """Raw MaskFormer predictions of one batch.

    pred_logits [B, Q, K + 1] (last = no object), pred_masks [B, Q, H/4, W/4] mask logits, aux the
    (logits, masks) of every intermediate decoder layer (first layer first; empty without deep
    supervision), input_size the padded (H, W) of the batch.
    """

    pred_logits: Tensor
    pred_masks: Tensor
    aux: list[tuple[Tensor, Tensor]] = field(default_factory=list)
    input_size: tuple[int, int] = (0, 0)

    def layers(self) -> list[tuple[Tensor, Tensor]]:
        """(logits, masks) of every supervised layer: the auxiliary ones, then the final one."""
        return [*self.aux, (self.pred_logits, self.pred_masks)]


def _conv_gn(in_channels: int, out_channels: int, kernel: int, relu: bool) -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.Conv2d(in_channels, out_channels, kernel, padding=kernel // 2, bias=False),
        nn.GroupNorm(gn_groups(out_channels), out_channels),
    ]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class PixelDecoder(nn.Module):
    """FPN-style top-down aggregation of the levels (finest first) into stride-4 embeddings.

    The coarsest level goes through a 3x3 conv; each finer level adds a 1x1 lateral conv of its
    input to the nearest-upsampled coarser output and goes through a 3x3 conv; a final 3x3 conv
    projects the finest map to `mask_dim` channels (MaskFormer's base pixel decoder).
    """

    def __init__(self, in_channels: int, levels: int, conv_dim: int, mask_dim: int) -> None:
        super().__init__()
        self.lateral = nn.ModuleList(
            _conv_gn(in_channels, conv_dim, 1, relu=False) for _ in range(levels - 1)
        )
        self.output = nn.ModuleList(
            _conv_gn(in_channels if i == levels - 1 else conv_dim, conv_dim, 3, relu=True)
            for i in range(levels)
        )
        self.mask_features = nn.Conv2d(conv_dim, mask_dim, 3, padding=1)

    def forward(self, maps: list[Tensor]) -> Tensor:
        """Per-pixel embeddings [B, mask_dim, H/4, W/4] from `maps` (finest first)."""
        y = self.output[-1](maps[-1])
        for i in range(len(maps) - 2, -1, -1):
            lateral = self.lateral[i](maps[i])
            y = lateral + F.interpolate(y, size=lateral.shape[-2:], mode="nearest")
            y = self.output[i](y)
        return self.mask_features(y)


def sine_position_encoding(
    x: Tensor, channels: int, temperature: float = 10000.0, scale: float = 2 * math.pi
) -> Tensor:
    """DETR's normalised sine encoding of a [B, *, H, W] map's positions: [B, channels, H, W].

    Half the channels encode the row, half the column; positions 1..H (1..W) are normalised to
    (0, scale], and channel pair (2i, 2i + 1) holds sin / cos of position / temperature^(2i / n)
    with n = channels / 2. No padding mask (MaskFormer passes none).
    """
    b, _, h, w = x.shape
    half = channels // 2
    eps = 1e-6
    y_pos = torch.arange(1, h + 1, device=x.device, dtype=torch.float32) / (h + eps) * scale
    x_pos = torch.arange(1, w + 1, device=x.device, dtype=torch.float32) / (w + eps) * scale
    index = torch.arange(half, device=x.device, dtype=torch.float32)
    dim_t = temperature ** (2 * torch.div(index, 2, rounding_mode="floor") / half)

    def encode(pos: Tensor) -> Tensor:  # [L] -> [L, half]: sin on even, cos on odd channels
        angles = pos[:, None] / dim_t
        return torch.stack((angles[:, 0::2].sin(), angles[:, 1::2].cos()), dim=2).flatten(1)

    pos_y = encode(y_pos)[:, None, :].expand(h, w, half)
    pos_x = encode(x_pos)[None, :, :].expand(h, w, half)
    pos = torch.cat((pos_y, pos_x), dim=2).permute(2, 0, 1)
    return pos[None].expand(b, -1, -1, -1).to(x.dtype)


class DecoderLayer(nn.Module):
    """One DETR decoder layer: query self-attention, cross-attention to the memory, FFN;
    post-norm (DETR's default) or pre-norm."""

    def __init__(
        self, dim: int, nheads: int, dim_feedforward: int, dropout: float, pre_norm: bool
    ) -> None:
        super().__init__()
        self.self_attn = nn.MultiheadAttention(dim, nheads, dropout=dropout, batch_first=True)
        self.cross_attn = nn.MultiheadAttention(dim, nheads, dropout=dropout, batch_first=True)
        self.linear1 = nn.Linear(dim, dim_feedforward)
        self.linear2 = nn.Linear(dim_feedforward, dim)
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)
        self.pre_norm = pre_norm

    def _ffn(self, x: Tensor) -> Tensor:
        return self.linear2(self.dropout(F.relu(self.linear1(x))))

    def forward(self, tgt: Tensor, memory: Tensor, query_pos: Tensor, pos: Tensor) -> Tensor:
        """tgt / query_pos [B, Q, C], memory / pos [B, HW, C] -> updated tgt [B, Q, C]."""
        if self.pre_norm:
            x = self.norm1(tgt)
            q = x + query_pos
            tgt = tgt + self.dropout(self.self_attn(q, q, x, need_weights=False)[0])
            x = self.norm2(tgt)
            attended = self.cross_attn(x + query_pos, memory + pos, memory, need_weights=False)[0]
            tgt = tgt + self.dropout(attended)
            return tgt + self.dropout(self._ffn(self.norm3(tgt)))
        q = tgt + query_pos
        tgt = self.norm1(tgt + self.dropout(self.self_attn(q, q, tgt, need_weights=False)[0]))
        attended = self.cross_attn(tgt + query_pos, memory + pos, memory, need_weights=False)[0]
        tgt = self.norm2(tgt + self.dropout(attended))
        return self.norm3(tgt + self.dropout(self._ffn(tgt)))


class MLP(nn.Module):
    """`layers` linear layers with ReLU between them (none after the last)."""

    def __init__(self, in_dim: int, hidden: int, out_dim: int, layers: int) -> None:
        super().__init__()
        dims = [in_dim] + [hidden] * (layers - 1) + [out_dim]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in itertools.pairwise(dims))

    def forward(self, x: Tensor) -> Tensor:
        """Apply the layers."""
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = F.relu(x)
        return x


class MaskFormerHead(nn.Module):
    """Pixel decoder + transformer decoder + class / mask-embedding heads (module docstring)."""

    def __init__(
        self,
        spec: FeatureSpec,
        num_classes: int,
        num_queries: int = 100,
        hidden_dim: int = 256,
        nheads: int = 8,
        dim_feedforward: int = 2048,
        dec_layers: int = 6,
        mask_dim: int = 256,
        conv_dim: int = 256,
        dropout: float = 0.1,
        pre_norm: bool = False,
        deep_supervision: bool = True,
        strides: tuple[int, ...] = (4, 8, 16, 32),
    ) -> None:
        super().__init__()
        missing = [s for s in strides if s not in spec.strides]
        if missing:
            raise ValueError(
                f"MaskFormer strides {missing} are not among the features {spec.strides}"
            )
        if hidden_dim % 2 or hidden_dim % nheads:
            raise ValueError(
                f"hidden_dim {hidden_dim} must be even and divisible by nheads {nheads}"
            )
        self.strides = tuple(sorted(strides))
        self.num_classes = num_classes
        self.deep_supervision = deep_supervision
        self.pixel_decoder = PixelDecoder(spec.pixel_channels, len(strides), conv_dim, mask_dim)
        self.input_proj = nn.Conv2d(spec.pixel_channels, hidden_dim, 1)
        self.query_embed = nn.Embedding(num_queries, hidden_dim)
        self.layers = nn.ModuleList(
            DecoderLayer(hidden_dim, nheads, dim_feedforward, dropout, pre_norm)
            for _ in range(dec_layers)
        )
        self.decoder_norm = nn.LayerNorm(hidden_dim)
        self.class_embed = nn.Linear(hidden_dim, num_classes + 1)
        self.mask_embed = MLP(hidden_dim, hidden_dim, mask_dim, 3)
        for p in self.layers.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)

    def decoder_states(self, memory_map: Tensor) -> list[Tensor]:
        """The normalised query states [B, Q, C] after every decoder layer, first layer first."""
        b = memory_map.shape[0]
        src = self.input_proj(memory_map)
        pos = sine_position_encoding(src, src.shape[1]).flatten(2).transpose(1, 2)
        memory = src.flatten(2).transpose(1, 2)
        # a copy, not a view: a view of a parameter made under no_grad trips module hooks
        query_pos = self.query_embed.weight.unsqueeze(0).repeat(b, 1, 1)
        tgt = torch.zeros_like(query_pos)
        states = []
        for layer in self.layers:
            tgt = layer(tgt, memory, query_pos, pos)
            states.append(self.decoder_norm(tgt))
        return states

    def predict_layer(self, state: Tensor, pixels: Tensor) -> tuple[Tensor, Tensor]:
        """(class logits [B, Q, K + 1], mask logits [B, Q, h, w]) of one decoder state."""
        masks = torch.einsum("bqc,bchw->bqhw", self.mask_embed(state), pixels)
        return self.class_embed(state), masks

    def forward(self, features: Features, batch: object = None) -> MaskFormerOutputs:
        """Predictions of the final layer and, with deep supervision, of every earlier one."""
        maps = features.levels(self.strides)
        pixels = self.pixel_decoder(maps)
        states = self.decoder_states(maps[-1])
        if not self.deep_supervision:
            states = states[-1:]
        layers = [self.predict_layer(s, pixels) for s in states]
        logits, masks = layers[-1]
        return MaskFormerOutputs(logits, masks, layers[:-1], tuple(features.input_size))
