"""Swin Transformer backbone (Liu et al. 2021) returning C2..C5, loading official checkpoints.

Swin-T by default: a 4x4 patch embedding to 96 channels + LayerNorm, four stages of
(2, 2, 6, 2) `SwinBlock`s with (3, 6, 12, 24) heads and window 7 (every second block shifted by
half a window), and a 2x2 patch merging (LayerNorm of the 4C concatenation, then a linear 4C -> 2C)
between stages. Each stage's output goes through its own LayerNorm (``norm0..norm3``, as the
mmdet / mmseg backbones do) and is returned as ``[B, C, H, W]`` at strides 4, 8, 16, 32.

Parameter names equal the official Swin release (``patch_embed.proj``, ``layers.{i}.blocks.{j}.
attn.qkv``, ``layers.{i}.downsample.reduction``, ...; merging at the *end* of stage i), so an
ImageNet checkpoint loads strictly with `load_swin_checkpoint`: its classifier (``head.*``), final
``norm.*`` and ``attn_mask`` buffers are dropped, and the output norms, which ImageNet
checkpoints lack, stay at their initialisation and are reported as such. timm's newer layout
(merging at the *start* of stage i+1, no ``relative_position_index``) is converted.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from drivemtl.config.base import PluginOptions
from drivemtl.models.backbones.frozen import FrozenStagesMixin
from drivemtl.models.weights import LoadReport, WeightsError, read_state_dict
from drivemtl.ops.window_attention import SwinBlock


class PatchEmbed(nn.Module):
    """Non-overlapping ``p x p`` patches -> `dim` channels (a strided conv) + LayerNorm.

    Images whose size is not a multiple of `p` are zero-padded at the bottom / right.
    Returns ``[B, H/p, W/p, dim]`` (channels last).
    """

    def __init__(self, dim: int, patch_size: int = 4, in_channels: int = 3) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_channels, dim, patch_size, stride=patch_size)
        self.norm = nn.LayerNorm(dim)

    def forward(self, images: Tensor) -> Tensor:
        """Embed ``images [B, 3, H, W]``."""
        p = self.patch_size
        h, w = images.shape[-2:]
        images = F.pad(images, (0, (-w) % p, 0, (-h) % p))
        return self.norm(self.proj(images).permute(0, 2, 3, 1))


class PatchMerging(nn.Module):
    """2x2 neighbourhood -> one token: concatenate (4C), LayerNorm, linear 4C -> 2C.

    Concatenation order is Swin's: (0, 0), (1, 0), (0, 1), (1, 1) as (row, column) offsets.
    Odd sizes are zero-padded first. ``[B, H, W, C] -> [B, ceil(H/2), ceil(W/2), 2C]``.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(4 * dim)
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        """Merge ``x [B, H, W, C]``."""
        h, w = x.shape[1:3]
        x = F.pad(x, (0, 0, 0, w % 2, 0, h % 2))
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], -1)
        return self.reduction(self.norm(x))


class SwinStage(nn.Module):
    """`depth` Swin blocks (odd ones shifted by ``ws // 2``) and an optional final merging."""

    def __init__(
        self,
        dim: int,
        depth: int,
        num_heads: int,
        window_size: int,
        drop_paths: Sequence[float],
        downsample: bool,
    ) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            SwinBlock(
                dim, num_heads, window_size, shift=0 if j % 2 == 0 else window_size // 2,
                drop_path=drop_paths[j],
            )
            for j in range(depth)
        )  # fmt: skip
        self.downsample = PatchMerging(dim) if downsample else None

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(stage output before merging, input of the next stage)``, both channels last."""
        for block in self.blocks:
            x = block(x)
        return x, (x if self.downsample is None else self.downsample(x))


class SwinTransformer(FrozenStagesMixin):
    """Swin feature extractor: ``forward(images [B, 3, H, W]) -> [C2, C3, C4, C5]``.

    Any image size works (patch embedding, windows and merging pad as needed); ``out_channels``
    are ``embed_dim * (1, 2, 4, 8)``, ``strides`` (4, 8, 16, 32). Stochastic depth rises
    linearly from 0 to `drop_path` over all blocks. ``frozen_stages`` = k freezes the patch
    embedding (k >= 0) and stages 1..k with their merging and output norm.
    """

    # Checkpoint keys that load_swin_checkpoint drops: the ImageNet classifier, the final norm
    # before it, and the precomputed shifted-window masks of fixed-size models.
    checkpoint_ignore_prefixes: tuple[str, ...] = ("head.", "norm.")
    checkpoint_ignore_suffixes: tuple[str, ...] = (".attn_mask",)

    def __init__(
        self,
        embed_dim: int = 96,
        depths: Sequence[int] = (2, 2, 6, 2),
        num_heads: Sequence[int] = (3, 6, 12, 24),
        window_size: int = 7,
        drop_path: float = 0.2,
        frozen_stages: int = -1,
        patch_size: int = 4,
    ) -> None:
        super().__init__()
        if len(depths) != 4 or len(num_heads) != 4:
            raise ValueError(f"Swin needs 4 stages, got depths {depths} and heads {num_heads}")
        if not -1 <= frozen_stages <= 4:
            raise ValueError(f"frozen_stages must be in -1..4, got {frozen_stages}")
        if window_size < 1 or not 0.0 <= drop_path < 1.0:
            raise ValueError(f"bad window_size {window_size} or drop_path {drop_path}")
        self.frozen_stages = frozen_stages
        self.patch_embed = PatchEmbed(embed_dim, patch_size)
        total = sum(depths)
        rates = [drop_path * k / max(total - 1, 1) for k in range(total)]  # linspace(0, p)
        dims = [embed_dim * 2**i for i in range(4)]
        self.layers = nn.ModuleList()
        start = 0
        for i, (depth, heads) in enumerate(zip(depths, num_heads, strict=True)):
            self.layers.append(
                SwinStage(dims[i], depth, heads, window_size, rates[start : start + depth], i < 3)
            )
            start += depth
        for i, dim in enumerate(dims):
            self.add_module(f"norm{i}", nn.LayerNorm(dim))
        self.out_channels: list[int] = dims
        self.strides: list[int] = [patch_size * 2**i for i in range(4)]
        self.apply(_init_weights)
        self._freeze()

    def output_norm_keys(self) -> list[str]:
        """State-dict keys of the per-stage output norms (absent from ImageNet checkpoints)."""
        return [f"norm{i}.{part}" for i in range(4) for part in ("weight", "bias")]

    def frozen_modules(self) -> list[nn.Module]:
        """Modules whose parameters ``frozen_stages`` fixes (patch embedding first)."""
        if self.frozen_stages < 0:
            return []
        modules: list[nn.Module] = [self.patch_embed]
        for i in range(self.frozen_stages):
            modules += [self.layers[i], getattr(self, f"norm{i}")]
        return modules

    def forward(self, images: Tensor) -> list[Tensor]:
        """C2..C5 as ``[B, C, H, W]``, finest first."""
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"Swin expects images [B, 3, H, W], got {tuple(images.shape)}")
        x = self.patch_embed(images)
        outputs = []
        for i, stage in enumerate(self.layers):
            out, x = stage(x)
            outputs.append(getattr(self, f"norm{i}")(out).permute(0, 3, 1, 2).contiguous())
        return outputs


def _init_weights(module: nn.Module) -> None:
    """Swin's initialisation: truncated-normal (std 0.02) linears, unit LayerNorms."""
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


@dataclass
class SwinLoadReport(LoadReport):
    """`LoadReport` plus the model tensors the checkpoint lacked by design (kept at init)."""

    initialised: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        text = (
            super().__str__().replace("dropped by prefix_map", "dropped (head / norm / attn_mask)")
        )
        if self.initialised:
            text += f"\n  kept at initialisation (not in checkpoint): {', '.join(self.initialised)}"
        return text


_TIMM_DOWNSAMPLE = re.compile(r"^layers\.(\d+)\.downsample\.")


def convert_timm_layout(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """timm >= 0.6 puts merging at the start of stage i+1: move it back to the end of stage i.

    The official layout (``layers.0..2.downsample``) is returned unchanged.
    """
    if not any(k.startswith("layers.3.downsample.") for k in state):
        return state
    converted = {}
    for key, value in state.items():
        match = _TIMM_DOWNSAMPLE.match(key)
        if match:
            key = f"layers.{int(match.group(1)) - 1}.downsample." + key[match.end() :]
        converted[key] = value
    return converted


def load_swin_checkpoint(module: SwinTransformer, path: str | Path) -> SwinLoadReport:
    """Load an official (or timm) Swin checkpoint from the local file `path` strictly.

    Dropped: ``head.*``, the final ``norm.*`` and ``*.attn_mask``. A missing
    ``relative_position_index`` (timm does not store it) keeps the computed one; a stored one must
    equal it. The output norms ``norm0..3`` may be absent (kept at init, reported in
    ``initialised``). Anything else missing, unknown or of the wrong shape raises one
    `WeightsError` naming the file and every mismatch; the module is untouched then.
    """
    path = Path(path)
    state = convert_timm_layout(read_state_dict(path))
    own = module.state_dict()
    report = SwinLoadReport(path=path)
    for key in list(state):
        ignored = key.startswith(module.checkpoint_ignore_prefixes) or key.endswith(
            module.checkpoint_ignore_suffixes
        )
        if ignored and key not in own:
            report.dropped.append(key)
            del state[key]
    report.mismatched = [
        (key, tuple(value.shape), tuple(own[key].shape))
        for key, value in state.items()
        if key in own and tuple(value.shape) != tuple(own[key].shape)
    ]
    skipped = {key for key, _, _ in report.mismatched}
    wrong_index = [
        key
        for key, value in state.items()
        if key.endswith("relative_position_index")
        and key in own
        and key not in skipped
        and not torch.equal(value.long(), own[key])
    ]
    report.unexpected = [key for key in state if key not in own]
    optional = set(module.output_norm_keys())
    for key in own:
        if key in state:
            continue
        if key in optional:
            report.initialised.append(key)
        elif not key.endswith("relative_position_index"):
            report.missing.append(key)
    if not report.ok or wrong_index:
        lines = [str(report)] + [f"  relative_position_index differs: {k}" for k in wrong_index]
        raise WeightsError(f"{path}: not a Swin checkpoint for this model:\n" + "\n".join(lines))
    loadable = {k: v for k, v in state.items() if k in own}
    module.load_state_dict(loadable, strict=False)
    report.loaded = sorted(loadable)
    return report


class SwinOptions(PluginOptions):
    """Swin options (Swin-T defaults) and a local official / timm checkpoint."""

    weights: Path | None = Field(None, description="local checkpoint (.pth/.pt/.safetensors)")
    embed_dim: int = Field(96, gt=0, description="channels of C2 (C3..C5: x2, x4, x8)")
    depths: tuple[int, int, int, int] = Field((2, 2, 6, 2), description="blocks per stage")
    heads: tuple[int, int, int, int] = Field((3, 6, 12, 24), description="heads per stage")
    window_size: int = Field(7, gt=0, description="attention window (tokens per side)")
    drop_path: float = Field(0.2, ge=0.0, lt=1.0, description="final stochastic-depth rate")
    frozen_stages: int = Field(-1, ge=-1, le=4, description="-1: none; k: embedding + stages 1..k")


def swin_t(options: SwinOptions) -> SwinTransformer:
    """Swin-T (C2..C5 channels 96/192/384/768), loaded strictly from `weights` when given."""
    model = SwinTransformer(
        options.embed_dim, options.depths, options.heads, options.window_size,
        options.drop_path, options.frozen_stages,
    )  # fmt: skip
    if options.weights is not None:
        model.load_report = load_swin_checkpoint(model, options.weights)
        model.loaded_weights = options.weights
    return model
