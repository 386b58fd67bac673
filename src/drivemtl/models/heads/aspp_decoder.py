"""DenseMTL's per-task decoder (Lopes et al., WACV 2023): ASPP on C5, then skip-connected blocks.

The decoder follows the "three ways" decoder of Hoyer et al. (CVPR 2021) that DenseMTL builds on,
itself the Monodepth2 decoder with an ASPP top block. Decoder scale s works at 1 / 2**s of the
input. The block of scale s runs a first convolution (the ASPP for the top block, an ELU conv
block otherwise), nearest upsampling to the size of scale s (only when the map is smaller: no
upsampling from C5 to C4 behind a dilated encoder), concatenation with the encoder map of level s
(C2..C4, for s = 2..4) and a second ELU conv block. Side outputs (one conv per task branch)
predict at the finest scale 0 and at every supervised scale.

The head is split for exchange modules: `decode` runs the blocks down to `exchange_scale` (1 in
DenseMTL, where its mTEB sits) and returns that scale's features; `predict` runs the remaining
blocks on the (possibly exchanged) features. Side outputs of scales >= `exchange_scale` come from
the features before any exchange, as DenseMTL supervises them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from drivemtl.models.features import BACKBONE, Features

NORMS = ("bn", "gn", "none")
SKIP_LEVELS = (2, 3, 4)  # encoder levels concatenated at the decoder scale of the same index


def norm_layer(kind: str, channels: int) -> nn.Module:
    """BatchNorm, GroupNorm (up to 32 groups) or identity, by name."""
    if kind == "bn":
        return nn.BatchNorm2d(channels)
    if kind == "gn":
        return nn.GroupNorm(math.gcd(32, channels), channels)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"unknown norm {kind!r}; expected one of {NORMS}")


def conv_elu(in_channels: int, out_channels: int) -> nn.Sequential:
    """3x3 convolution on reflection padding, then ELU (Monodepth2's ConvBlock)."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1, padding_mode="reflect"),
        nn.ELU(inplace=True),
    )


def _branch(in_channels: int, out_channels: int, norm: str, rate: int = 0) -> nn.Sequential:
    """1x1 (rate 0) or dilated 3x3 convolution + norm + ReLU: one ASPP branch."""
    if rate:
        conv = nn.Conv2d(in_channels, out_channels, 3, padding=rate, dilation=rate, bias=False)
    else:
        conv = nn.Conv2d(in_channels, out_channels, 1, bias=False)
    return nn.Sequential(conv, norm_layer(norm, out_channels), nn.ReLU(inplace=True))


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling (DeepLabv3): parallel branches, concatenated and projected.

    Branches: a 1x1 conv, one dilated 3x3 conv per rate and (with `pooling`) an image-pooling
    branch (global average, 1x1 conv, broadcast back over the map); each with norm + ReLU. The
    concatenation is projected by 1x1 conv + norm + ReLU + dropout. With norm "bn" the pooling
    branch needs more than one image per batch in training, as in torchvision's ASPP.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int = 256,
        rates: Sequence[int] = (6, 12, 18),
        pooling: bool = True,
        dropout: float = 0.5,
        norm: str = "bn",
    ) -> None:
        super().__init__()
        self.rates = tuple(int(r) for r in rates)
        if any(r <= 0 for r in self.rates):
            raise ValueError(f"ASPP rates must be positive, got {rates}")
        self.branches = nn.ModuleList(
            _branch(in_channels, out_channels, norm, rate) for rate in (0, *self.rates)
        )
        self.pooling = (
            nn.Sequential(nn.AdaptiveAvgPool2d(1), _branch(in_channels, out_channels, norm))
            if pooling
            else None
        )
        count = len(self.branches) + int(pooling)
        self.project = nn.Sequential(
            nn.Conv2d(count * out_channels, out_channels, 1, bias=False),
            norm_layer(norm, out_channels),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
        )
        self.out_channels = out_channels

    def branch_maps(self, x: Tensor) -> list[Tensor]:
        """Every branch's map, in order (1x1, the rates, image pooling), before projection."""
        maps = [branch(x) for branch in self.branches]
        if self.pooling is not None:
            maps.append(self.pooling(x).expand(-1, -1, *x.shape[-2:]))
        return maps

    def forward(self, x: Tensor) -> Tensor:
        """Projected concatenation of the branches, at the input's resolution."""
        return self.project(torch.cat(self.branch_maps(x), dim=1))


class DecoderBlock(nn.Module):
    """first conv -> nearest upsampling to the scale's size -> concat the skip -> ELU conv block."""

    def __init__(self, first: nn.Module, mid_channels: int, skip_channels: int, out_channels: int):
        super().__init__()
        self.first = first
        self.fuse = conv_elu(mid_channels + skip_channels, out_channels)
        self.skip_channels = skip_channels
        self.out_channels = out_channels

    def forward(self, x: Tensor, size: tuple[int, int], skip: Tensor | None = None) -> Tensor:
        """The block's features at `size` (the skip's size when there is one)."""
        x = self.first(x)
        if tuple(x.shape[-2:]) != tuple(size):
            x = F.interpolate(x, size=size, mode="nearest")
        if skip is not None:
            x = torch.cat((x, skip), dim=1)
        return self.fuse(x)


class ScaleOutputs(dict):
    """The final branch maps (scale 0, input size), a dict keyed like the task's branches.

    `side` maps each supervised intermediate scale to its branch maps at that scale's own
    resolution; it is filled only when the head ran with training targets (a batch).
    """

    def __init__(
        self, final: dict[str, Tensor], side: dict[int, dict[str, Tensor]] | None = None
    ) -> None:
        super().__init__(final)
        self.side: dict[int, dict[str, Tensor]] = dict(side or {})


class ASPPSkipDecoder(nn.Module):
    """ASPP top block on C5, skip-connected decoder blocks and side outputs (module docstring).

    `outputs` maps a branch name to its channels; `channels` are the decoder blocks' widths from
    the top (coarsest, scale len - 1) block to scale 0; `skip_channels` the channels of encoder
    levels 2..4 (C2..C4). `side_kernel` is 1 (class branches) or 3 (regression branches, on
    reflection padding); side outputs are raw, the task applies its own activation. `name` keys
    the intermediate side outputs in `Features.extras` between the decoder and the predictor.
    """

    needs = (BACKBONE,)

    def __init__(
        self,
        in_channels: int,
        skip_channels: dict[int, int],
        outputs: dict[str, int],
        channels: Sequence[int] = (256, 256, 128, 128, 64),
        aspp_channels: int = 256,
        aspp_rates: Sequence[int] = (6, 12, 18),
        aspp_pooling: bool = True,
        aspp_dropout: float = 0.5,
        aspp_norm: str = "bn",
        supervised_scales: Sequence[int] = (0, 1),
        exchange_scale: int = 1,
        side_kernel: int = 1,
        name: str = "",
    ) -> None:
        super().__init__()
        self.num_scales = len(channels)
        self.supervised = tuple(sorted(set(int(s) for s in supervised_scales) | {0}))
        self._check(outputs, channels, exchange_scale, side_kernel)
        self.exchange_scale = int(exchange_scale)
        self.skip_channels = {s: int(skip_channels[s]) for s in SKIP_LEVELS if s < self.num_scales}
        self.extras_key = f"aspp_skip:{name}"
        aspp = ASPP(in_channels, aspp_channels, aspp_rates, aspp_pooling, aspp_dropout, aspp_norm)
        self.blocks = nn.ModuleDict()
        previous = aspp_channels
        for s in reversed(range(self.num_scales)):
            width = int(channels[self.num_scales - 1 - s])
            first = aspp if s == self.num_scales - 1 else conv_elu(previous, width)
            mid = aspp_channels if s == self.num_scales - 1 else width
            self.blocks[str(s)] = DecoderBlock(first, mid, self.skip_channels.get(s, 0), width)
            previous = width
        self.sides = nn.ModuleDict(
            {str(s): self._side_convs(s, outputs, side_kernel) for s in self.supervised}
        )
        self.out_channels = self.blocks[str(self.exchange_scale)].out_channels
        below = range(self.exchange_scale)
        self.predictor_modules = tuple(f"blocks.{s}" for s in below) + tuple(
            f"sides.{s}" for s in self.supervised if s < max(self.exchange_scale, 1)
        )

    @property
    def aspp(self) -> ASPP:
        """The ASPP top block (the first layer of the coarsest decoder block)."""
        return self.blocks[str(self.num_scales - 1)].first

    def _check(
        self, outputs: dict[str, int], channels: Sequence[int], exchange: int, kernel: int
    ) -> None:
        if not outputs:
            raise ValueError("ASPPSkipDecoder needs at least one output branch")
        if not 1 <= len(channels) <= 5 or any(int(c) <= 0 for c in channels):
            raise ValueError(f"channels must be 1 to 5 positive widths, got {list(channels)}")
        if not 0 <= exchange < len(channels):
            raise ValueError(f"exchange_scale must be in 0..{len(channels) - 1}, got {exchange}")
        if any(not 0 <= s < len(channels) for s in self.supervised):
            raise ValueError(
                f"supervised_scales must be in 0..{len(channels) - 1}, got {list(self.supervised)}"
            )
        if kernel not in (1, 3):
            raise ValueError(f"side_kernel must be 1 or 3, got {kernel}")

    def _side_convs(self, scale: int, outputs: dict[str, int], kernel: int) -> nn.ModuleDict:
        width = self.blocks[str(scale)].out_channels
        return nn.ModuleDict(
            {
                name: nn.Conv2d(width, ch, kernel, padding=kernel // 2, padding_mode="reflect")
                for name, ch in outputs.items()
            }
        )

    def scale_size(self, scale: int, features: Features) -> tuple[int, int]:
        """Size of decoder scale `scale`: its skip's size, else ceil(input / 2**scale)."""
        skip = self.skip(scale, features)
        if skip is not None:
            return int(skip.shape[-2]), int(skip.shape[-1])
        h, w = features.input_size
        return -(-h // 2**scale), -(-w // 2**scale)

    def skip(self, scale: int, features: Features) -> Tensor | None:
        """The encoder map concatenated at `scale` (level `scale` of C2..C5), if any."""
        if scale not in self.skip_channels:
            return None
        index = len(features.backbone) - 1 - (5 - scale)
        if index < 0:
            raise ValueError(f"aspp_skip needs backbone level C{scale}; the backbone returns fewer")
        skip = features.backbone[index]
        if skip.shape[1] != self.skip_channels[scale]:
            raise ValueError(
                f"aspp_skip: C{scale} has {skip.shape[1]} channels, the head was built for "
                f"{self.skip_channels[scale]} (set head.skip_channels to the C2..C4 channels)"
            )
        return skip

    def run_block(self, scale: int, x: Tensor, features: Features) -> Tensor:
        """Decoder block of `scale` on `x` (the ASPP input C5, or the previous block's output)."""
        block = self.blocks[str(scale)]
        return block(x, self.scale_size(scale, features), self.skip(scale, features))

    def side_outputs(self, scale: int, x: Tensor) -> dict[str, Tensor]:
        """Raw branch maps of `scale`'s side output, at that scale's resolution."""
        return {name: conv(x) for name, conv in self.sides[str(scale)].items()}

    def _blocks(
        self, scales: range, x: Tensor, features: Features, batch: object
    ) -> tuple[Tensor, dict[int, dict[str, Tensor]]]:
        """Run the blocks of `scales` (coarse to fine); side outputs of supervised scales > 0."""
        side: dict[int, dict[str, Tensor]] = {}
        for s in scales:
            x = self.run_block(s, x, features)
            if batch is not None and s > 0 and s in self.supervised:
                side[s] = self.side_outputs(s, x)
        return x, side

    def decode(self, features: Features, batch: object = None) -> Tensor:
        """The task features: the block output at `exchange_scale` (side outputs kept aside)."""
        scales = range(self.num_scales - 1, self.exchange_scale - 1, -1)
        x, side = self._blocks(scales, features.backbone[-1], features, batch)
        features.extras[self.extras_key] = side
        return x

    def predict(self, shared: Tensor, features: Features, batch: object = None) -> ScaleOutputs:
        """Remaining blocks on the task features; final maps at input size plus side outputs."""
        x, side = self._blocks(range(self.exchange_scale - 1, -1, -1), shared, features, batch)
        final = self.side_outputs(0, x)
        if tuple(x.shape[-2:]) != tuple(features.input_size):
            final = {
                k: F.interpolate(v, size=features.input_size, mode="bilinear", align_corners=False)
                for k, v in final.items()
            }
        return ScaleOutputs(final, {**features.extras.get(self.extras_key, {}), **side})

    def forward(self, features: Features, batch: object = None) -> ScaleOutputs:
        """decode, then predict."""
        return self.predict(self.decode(features, batch), features, batch)
