"""DenseMTL's cross-task attention (xTAM) and multi-task exchange block (mTEB), WACV 2023.

For an ordered task pair s -> t, `XTAM` builds the directional message (paper Eq. 4)
f_{s->t} = [α ⊙ xtask_{s->t}, self_{s->t}], channel-wise concatenated in that order:

- xtask (correlation-guided attention, Eqs. 1-2): target query Q = P_Q(↓f_t), source key and
  value K = P_K(↓f_s), V = P_V(↓f_s) (each 1x1 conv + BN + ReLU to `channels` = c); every
  target position attends over the source positions with softmax(Q·K / sqrt(c)); the attended
  values are brought back up (↑) to the target's size.
- self (the spatial self-attention of the source, Eq. 3): F_f(f_s) ⊙ sigmoid(F_m(f_s)), F_f and
  F_m 3x3 convs (as PAD-Net's attention block) from the source's channels to c.
- α: one learnable weight per xtask channel, [1, c, 1, 1], initialised to zeros, applied after
  the upscaling: at initialisation the message is [0, self] and exchange starts from
  self-attention only, as the paper prescribes for stable training.

Scaling: ↓ is average pooling with kernel = stride = `downscale` in ceil mode (a border window
averages the pixels inside the map), for the query and for the key / value alike (one factor, as
DenseMTL's released code does; the paper's text writes ↓s for the target and ↓s² for the
source). ↑ copies each pooled cell's value to every pixel of its pooling window (nearest
upsampling by `downscale`, cropped to the target's size), the exact inverse of the windows.

`MTEB` refines every listed task's decoder features from the originals (Eq. 5):
f̃_t = f_t + F_t([f_{s->t} for s ≠ t, in config order]), F_t = 1x1 conv + BN + ReLU to t's
channels. A source map of another size than the target is resized (bilinear) to it first.

Memory: per image and per ordered pair, the attention matrix has (H·W / downscale²)² entries for
H x W task features, and its softmax is kept for the backward pass. At DenseMTL's setting
(1024x512 input, block at decoder stage 1 = stride 2, 512x256 features, downscale 4: 128x64 =
8192 positions) that is 8192² = 67M entries, 256 MiB in float32 per image and pair (twice that
at the peak, logits and softmax together): with two tasks (2 pairs) and batch 2, 1 GiB; three
tasks, 6 pairs, 3 GiB. DriveMTL's Semantic-FPN decoders sit at stride 4: 2048 positions there,
16 MiB per image and pair. The cost grows with the 4th power of the resolution: downscale 2 at
stride 2 would be 16x more (4 GiB per image and pair).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from drivemtl.models.exchanges import EXCHANGES, ExchangeOptions
from drivemtl.models.features import Features, task_stream
from drivemtl.models.stage import FeatureStage, StageContext


def conv_bn_relu(in_channels: int, out_channels: int) -> nn.Sequential:
    """1x1 conv + BatchNorm + ReLU: DenseMTL's projection block (xTAM projections and F_t)."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(),
    )


def downscale_map(x: Tensor, factor: int) -> Tensor:
    """Average over `factor` x `factor` windows (ceil mode: border windows average what is inside)."""
    if factor == 1:
        return x
    return F.avg_pool2d(x, factor, factor, ceil_mode=True)


def upscale_map(x: Tensor, factor: int, size: tuple[int, int]) -> Tensor:
    """Copy each cell to the pixels of its `factor` x `factor` window, cropped to `size`."""
    if factor == 1:
        return x
    x = x.repeat_interleave(factor, dim=2).repeat_interleave(factor, dim=3)
    return x[:, :, : size[0], : size[1]]


class XTAM(nn.Module):
    """Directional cross-task attention s -> t: the message [α ⊙ xtask, self] for the target."""

    def __init__(
        self, source_channels: int, target_channels: int, channels: int, downscale: int = 4
    ) -> None:
        super().__init__()
        if channels <= 0 or downscale <= 0:
            raise ValueError(
                f"xTAM needs channels > 0 and downscale > 0, got {channels}, {downscale}"
            )
        self.channels = channels
        self.downscale = downscale
        self.out_channels = 2 * channels
        self.query = conv_bn_relu(target_channels, channels)
        self.key = conv_bn_relu(source_channels, channels)
        self.value = conv_bn_relu(source_channels, channels)
        self.features = nn.Conv2d(source_channels, channels, 3, padding=1)  # F_f
        self.mask = nn.Conv2d(source_channels, channels, 3, padding=1)  # F_m
        self.alpha = nn.Parameter(torch.zeros(1, channels, 1, 1))

    def correlation(self, source: Tensor, target: Tensor) -> Tensor:
        """xtask: source values attended by target queries, [B, c, H_t, W_t] (before α)."""
        query = self.query(downscale_map(target, self.downscale))
        small = downscale_map(source, self.downscale)
        key, value = self.key(small).flatten(2), self.value(small).flatten(2)
        logits = query.flatten(2).transpose(1, 2) @ key / math.sqrt(self.channels)
        attended = value @ logits.softmax(dim=-1).transpose(1, 2)  # [B, c, N_target]
        attended = attended.view_as(query)
        return upscale_map(attended, self.downscale, (target.shape[2], target.shape[3]))

    def gate(self, source: Tensor) -> Tensor:
        """self: the source's features gated by its own spatial mask, F_f(f_s) ⊙ σ(F_m(f_s))."""
        return self.features(source) * torch.sigmoid(self.mask(source))

    def forward(self, source: Tensor, target: Tensor) -> Tensor:
        """The message f_{s->t} = [α ⊙ xtask, self]: [B, 2c, H, W] (source and target H x W)."""
        if source.shape[2:] != target.shape[2:]:
            raise ValueError(
                f"xTAM: source {tuple(source.shape[2:])} and target {tuple(target.shape[2:])} "
                "maps differ in size; resize the source first"
            )
        return torch.cat([self.alpha * self.correlation(source, target), self.gate(source)], 1)


def pair_key(source: str, target: str) -> str:
    """Module key of the xTAM from `source` to `target` (no dots: a valid ModuleDict key)."""
    return f"{source}_to_{target}"


class MTEB(FeatureStage):
    """Multi-task exchange block: f̃_t = f_t + F_t(concat of the xTAM messages from every s ≠ t)."""

    def __init__(
        self, tasks: list[str], task_channels: dict[str, int], channels: int, downscale: int
    ) -> None:
        super().__init__()
        self.tasks = tuple(tasks)
        self.modifies = tuple(task_stream(t) for t in self.tasks)
        self.pairs = nn.ModuleDict(
            {
                pair_key(s, t): XTAM(task_channels[s], task_channels[t], channels, downscale)
                for t in self.tasks
                for s in self.sources(t)
            }
        )
        width = 2 * channels * (len(self.tasks) - 1)
        self.project = nn.ModuleDict({t: conv_bn_relu(width, task_channels[t]) for t in self.tasks})

    def sources(self, target: str) -> list[str]:
        """The tasks sending messages to `target`, in config order."""
        return [s for s in self.tasks if s != target]

    def message(self, source: str, target: str, maps: dict[str, Tensor]) -> Tensor:
        """f_{s->t}, the source map resized (bilinear) to the target's size when they differ."""
        f_s, f_t = maps[source], maps[target]
        if f_s.shape[2:] != f_t.shape[2:]:
            f_s = F.interpolate(f_s, size=f_t.shape[2:], mode="bilinear", align_corners=False)
        return self.pairs[pair_key(source, target)](f_s, f_t)

    def refine(self, maps: dict[str, Tensor]) -> dict[str, Tensor]:
        """Every task's refined features, all computed from the original `maps`."""
        out = {}
        for t in self.tasks:
            messages = torch.cat([self.message(s, t, maps) for s in self.sources(t)], 1)
            out[t] = maps[t] + self.project[t](messages)
        return out

    def forward(self, features: Features) -> None:
        """Replace the listed tasks' features in `features.tasks` by their refined versions."""
        features.tasks.update(self.refine({t: features.tasks[t] for t in self.tasks}))


class MTEBOptions(ExchangeOptions):
    """Options of DenseMTL's mTEB: the exchanged tasks, the attention width and downscale."""

    channels: int = Field(
        128,
        gt=0,
        description="width c of the xTAM projections and attention (DenseMTL: 128, decoder "
        "stage 1); each message has 2c channels",
    )
    downscale: int = Field(
        4,
        ge=1,
        description="average-pooling factor of the attention's queries, keys and values "
        "(DenseMTL: 4); the attention matrix has (H·W/downscale²)² entries per image and pair",
    )


@EXCHANGES.register("mteb", options=MTEBOptions)
def mteb(options: MTEBOptions, context: StageContext) -> MTEB:
    """DenseMTL's mTEB between the decoder features of `options.tasks`."""
    where = f"{context.name or 'exchange'} (mteb)"
    repeated = sorted({t for t in options.tasks if options.tasks.count(t) > 1})
    if repeated:
        raise ValueError(f"{where}: tasks {repeated} are listed more than once")
    missing = [t for t in options.tasks if t not in context.task_channels]
    if missing:
        raise ValueError(
            f"{where}: tasks {missing} have no decoder features to exchange (tasks with "
            f"decoder features: {sorted(context.task_channels) or 'none'})"
        )
    return MTEB(list(options.tasks), context.task_channels, options.channels, options.downscale)


__all__ = ["MTEB", "XTAM", "MTEBOptions", "mteb"]
