"""Feature Pyramid Network (Lin et al. 2017): C2..C5 -> P2..P6 with a common channel width.

Lateral 1x1 convolutions, nearest-neighbour top-down upsampling to the lateral's exact size (so odd
input sizes such as 375x1242 work), 3x3 output convolutions, optional GroupNorm, and P6 as a
stride-2 max-pool (kernel 1) of P5, as in Mask R-CNN.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn


def _conv_norm(in_ch: int, out_ch: int, kernel: int, norm: str | None) -> nn.Sequential:
    conv = nn.Conv2d(in_ch, out_ch, kernel, padding=kernel // 2, bias=norm is None)
    nn.init.kaiming_uniform_(conv.weight, a=1)
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)
    if norm is None:
        return nn.Sequential(conv)
    return nn.Sequential(conv, nn.GroupNorm(math.gcd(32, out_ch), out_ch))


class FPN(nn.Module):
    """``forward([C_l for l in in_levels]) -> [P_l ...] (+ P6)``, all ``out_channels`` wide.

    ``in_levels`` defaults to consecutive levels ending at 5 (C2..C5 for four inputs); ``strides``
    lists ``2**level`` per output. ``norm``: "gn" (GroupNorm after every conv) or None / "none".
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        out_channels: int = 256,
        norm: str | None = "gn",
        extra_p6: bool = True,
        in_levels: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        if not in_channels:
            raise ValueError("FPN needs at least one input level")
        if norm == "none":
            norm = None
        if norm not in (None, "gn"):
            raise ValueError(f"FPN norm must be 'gn' or None, got {norm!r}")
        if in_levels is None:
            in_levels = range(6 - len(in_channels), 6)
        levels = [int(level) for level in in_levels]
        if len(levels) != len(in_channels):
            raise ValueError(f"FPN: {len(in_channels)} in_channels but in_levels={levels}")
        if levels != list(range(levels[0], levels[0] + len(levels))):
            raise ValueError(f"FPN in_levels must be consecutive, got {levels}")
        self.in_levels = levels
        self.extra_p6 = extra_p6
        self.lateral_convs = nn.ModuleList(
            _conv_norm(c, out_channels, 1, norm) for c in in_channels
        )
        self.output_convs = nn.ModuleList(
            _conv_norm(out_channels, out_channels, 3, norm) for _ in in_channels
        )
        out_levels = levels + ([levels[-1] + 1] if extra_p6 else [])
        self.out_levels = out_levels
        self.out_channels = out_channels
        self.strides: list[int] = [2**level for level in out_levels]

    def forward(self, features: Sequence[Tensor]) -> list[Tensor]:
        """Fuse coarse-to-fine and return the pyramid, finest first."""
        if len(features) != len(self.lateral_convs):
            raise ValueError(
                f"FPN expects {len(self.lateral_convs)} feature maps (levels {self.in_levels}), "
                f"got {len(features)}"
            )
        laterals = [conv(f) for conv, f in zip(self.lateral_convs, features, strict=True)]
        merged = [laterals[-1]]
        for lateral in reversed(laterals[:-1]):
            top = F.interpolate(merged[0], size=lateral.shape[-2:], mode="nearest")
            merged.insert(0, lateral + top)
        outputs = [conv(m) for conv, m in zip(self.output_convs, merged, strict=True)]
        if self.extra_p6:
            outputs.append(F.max_pool2d(outputs[-1], kernel_size=1, stride=2))
        return outputs
