"""Semantic-FPN dense decoder (Kirillov et al. 2019) as used by VTDNet's segmentation decoders.

Each FPN level is brought to P2's scale by repeated (conv3x3 + GN + ReLU + 2x bilinear upsampling)
stages, the maps are summed, and per-output conv branches predict at stride 4 before a final
bilinear upsampling to the padded input size. One class serves semantic, drivable, lanes (three
branches), depth, normals and edges; only the branch channels differ.

`conv="deform"` makes every 3x3 conv of the decoder (its own aggregation, the shared task convs
and the branch convs) a modulated deformable convolution (DCNv2) followed by GroupNorm, as in
VTDNet's segmentation decoders; the 1x1 output convs stay plain (a 1x1 kernel has one tap, so a
learned offset would only shift the sampling point of a per-pixel classifier). The offset / mask
convolution is zero-initialised as in DCNv2: offsets 0, mask sigmoid(0) = 0.5, so at
initialisation the deformable conv is 0.5 x the plain conv with the same weight; the GroupNorm
right after it (the conv has no bias) is invariant to that scale, so the conv + GN + ReLU block
starts as the plain block (up to GN's eps) without rescaling the mask by 2.
"""

from __future__ import annotations

from typing import Literal

import torch.nn.functional as F
from torch import Tensor, nn

from drivemtl.models.features import PIXEL, Features, FeatureSpec, group_stream
from drivemtl.ops.deform_conv import DeformConv2dPack

ConvKind = Literal["plain", "deform"]
CONV_KINDS: tuple[str, ...] = ("plain", "deform")


def gn_groups(channels: int) -> int:
    """GroupNorm groups for `channels`: the largest of 32, 16, 8, 4, 2 that divides it, else 1."""
    for groups in (32, 16, 8, 4, 2):
        if channels % groups == 0:
            return groups
    return 1


def conv3x3(in_channels: int, out_channels: int, conv: ConvKind = "plain") -> nn.Module:
    """A bias-free 3x3 convolution (stride 1, padding 1): plain, or modulated deformable (DCNv2
    with one offset group, its offset / mask conv zero-initialised)."""
    if conv == "plain":
        return nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
    if conv == "deform":
        return DeformConv2dPack(in_channels, out_channels, 3, padding=1, bias=False)
    raise ValueError(f"conv {conv!r}: expected one of {CONV_KINDS}")


def conv_gn_relu(in_channels: int, out_channels: int, conv: ConvKind = "plain") -> nn.Sequential:
    """3x3 convolution (plain or deformable) + GroupNorm + ReLU, every decoder's building block."""
    return nn.Sequential(
        conv3x3(in_channels, out_channels, conv),
        nn.GroupNorm(gn_groups(out_channels), out_channels),
        nn.ReLU(inplace=True),
    )


class _ScaleBranch(nn.Module):
    """Brings one FPN level from stride 4 * 2**k to stride 4 with k conv + upsampling stages."""

    def __init__(
        self, in_channels: int, channels: int, upsamplings: int, conv: ConvKind = "plain"
    ) -> None:
        super().__init__()
        stages = max(upsamplings, 1)
        self.convs = nn.ModuleList(
            conv_gn_relu(in_channels if i == 0 else channels, channels, conv) for i in range(stages)
        )
        self.upsamplings = upsamplings

    def forward(self, x: Tensor) -> Tensor:
        for i, conv in enumerate(self.convs):
            x = conv(x)
            if i < self.upsamplings:
                x = F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)
        return x


class SemanticFPNDecoder(nn.Module):
    """Aggregates pixel features at stride 4 and predicts one or more dense maps at input size.

    `outputs` maps a branch name to its channel count (e.g. {"logits": 19} or, for lanes,
    {"category": 9, "direction": 3, "style": 3}); `forward` returns a dict of [B, C, H, W] maps at
    the padded input size, keyed like `outputs`. The decoder (`decode`: the stride-4 aggregation,
    then `shared_convs` conv + GN + ReLU layers common to every branch: the task features) and
    the predictor (`predict`: the per-branch convs and upsampling) are separate so that exchange
    modules can act between them. With `group`, the decoder reads that task group's shared map (a
    group encoder's output) instead of aggregating the levels itself. `conv` selects plain or
    modulated deformable 3x3 convolutions (see the module docstring).
    """

    predictor_modules = ("branches",)  # parameters of the predictor stage (`@predictor`)

    def __init__(
        self,
        spec: FeatureSpec,
        outputs: dict[str, int],
        channels: int = 128,
        strides: tuple[int, ...] = (4, 8, 16, 32),
        branch_convs: int = 0,
        group: str | None = None,
        shared_convs: int = 0,
        conv: ConvKind = "plain",
    ) -> None:
        super().__init__()
        if not outputs:
            raise ValueError("SemanticFPNDecoder needs at least one output branch")
        if conv not in CONV_KINDS:
            raise ValueError(f"SemanticFPNDecoder: conv {conv!r}, expected one of {CONV_KINDS}")
        self.group = group
        self.strides = tuple(strides)
        self.needs = (group_stream(group),) if group is not None else (PIXEL,)
        if group is not None:
            if group not in spec.groups:
                raise ValueError(
                    f"decoder reads group {group!r}, but no group encoder provides it "
                    f"(group encoders: {sorted(spec.groups) or 'none'})"
                )
            self.scales = nn.ModuleList()
            in_channels = spec.groups[group]
        else:
            missing = [s for s in strides if s not in spec.strides]
            if missing:
                raise ValueError(
                    f"decoder strides {missing} are not among the features {spec.strides}"
                )
            self.scales = aggregation_scales(spec.pixel_channels, channels, self.strides, conv)
            in_channels = channels
        self.trunk = conv_stack(in_channels, channels, shared_convs, conv)
        in_channels = channels if shared_convs else in_channels
        self.out_channels = in_channels
        self.branches = nn.ModuleDict()
        for name, out_channels in outputs.items():
            layers: list[nn.Module] = [
                conv_gn_relu(in_channels if i == 0 else channels, channels, conv)
                for i in range(branch_convs)
            ]
            layers.append(nn.Conv2d(channels if branch_convs else in_channels, out_channels, 1))
            self.branches[name] = nn.Sequential(*layers)

    def aggregate(self, features: Features) -> Tensor:
        """Sum of every level brought to the finest stride: [B, channels, H/4, W/4]."""
        return aggregate_levels(self.scales, features.levels(self.strides))

    def decode(self, features: Features, batch: object = None) -> Tensor:
        """The task features: the shared convs on the decoder's input (`decoder_input`)."""
        return self.trunk(self.decoder_input(features, batch))

    def decoder_input(self, features: Features, batch: object = None) -> Tensor:
        """The group's shared map or this decoder's own aggregation."""
        if self.group is not None:
            return features.group_map(self.group, getattr(self, "task", None))
        return self.aggregate(features)

    def predict(
        self, shared: Tensor, features: Features, batch: object = None
    ) -> dict[str, Tensor]:
        """Per-branch maps upsampled to the padded input size."""
        return {
            name: F.interpolate(
                branch(shared), size=features.input_size, mode="bilinear", align_corners=False
            )
            for name, branch in self.branches.items()
        }

    def forward(self, features: Features, batch: object = None) -> dict[str, Tensor]:
        """decode, then predict."""
        return self.predict(self.decode(features, batch), features, batch)


def conv_stack(in_channels: int, channels: int, depth: int, conv: ConvKind) -> nn.Sequential:
    """`depth` conv + GN + ReLU layers, `in_channels` -> `channels` (identity when 0)."""
    return nn.Sequential(
        *(conv_gn_relu(in_channels if i == 0 else channels, channels, conv) for i in range(depth))
    )


def aggregation_scales(
    in_channels: int, channels: int, strides: tuple[int, ...], conv: ConvKind = "plain"
) -> nn.ModuleList:
    """One `_ScaleBranch` per stride, bringing each level to the finest of `strides`."""
    base = min(strides)
    return nn.ModuleList(
        _ScaleBranch(in_channels, channels, (s // base).bit_length() - 1, conv) for s in strides
    )


def aggregate_levels(scales: nn.ModuleList, maps: list[Tensor]) -> Tensor:
    """Sum of `scales[i](maps[i])`, every term resized to the first (finest) one's size."""
    out = scales[0](maps[0])
    for scale, x in zip(scales[1:], maps[1:], strict=True):
        y = scale(x)
        if y.shape[-2:] != out.shape[-2:]:
            y = F.interpolate(y, size=out.shape[-2:], mode="bilinear", align_corners=False)
        out = out + y
    return out
