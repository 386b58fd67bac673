"""PAD-Net's multi-modal distillation (Xu et al. CVPR 2018) as exchange modules between decoders.

Both are DenseMTL (WACV 2023) baselines. The message a task a sends to a task t is PAD-Net's
spatial self-attention on the source, the form DenseMTL's Eq. (3) writes and its reference code
runs: msg_{a->t} = W^f_{a,t} * f_a  (.)  sigmoid(W^m_{a,t} * f_a), two 3x3 convolutions without
bias per ordered pair, and f_t <- f_t + sum_{a != t} msg_{a->t}. Sources whose maps differ in size
from the target's are bilinearly resized to the target's size first.

`padnet`: per task two ResNet bottlenecks at `channels` (the first projects the decoder width
through its shortcut), the distillation, two more bottlenecks and a 1x1 conv back to the decoder
width. `padnet3` ("3-ways PAD-Net"): the distillation alone at 128 channels, see `PadNet3Exchange`.
"""

from __future__ import annotations

from typing import Literal

import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from drivemtl.models.backbones.resnet import make_norm
from drivemtl.models.exchanges import EXCHANGES, ExchangeOptions
from drivemtl.models.features import Features, task_stream
from drivemtl.models.stage import FeatureStage, StageContext

Norm = Literal["bn", "gn"]


class PadNetOptions(ExchangeOptions):
    """Options of `padnet`: the width the distillation runs at and the bottlenecks' norm."""

    channels: int = Field(
        256, ge=4, multiple_of=4, description="width of the bottlenecks and the distillation"
    )
    norm: Norm = Field("bn", description="normalisation inside the bottlenecks (PAD-Net: bn)")


class PadNet3Options(ExchangeOptions):
    """Options of `padnet3`: the distillation's width and how many blocks follow each other."""

    channels: int = Field(128, gt=0, description="width of the distillation (3-ways: 128)")
    blocks: int = Field(
        1, ge=1, description="distillation blocks in sequence (3-ways PAD-Net, DenseMTL: 1)"
    )


class Bottleneck(nn.Module):
    """ResNet bottleneck (1x1, 3x3, 1x1 at a quarter width) with a projected shortcut if needed."""

    def __init__(self, in_channels: int, channels: int, norm: Norm = "bn") -> None:
        super().__init__()
        mid = channels // 4
        self.conv1 = nn.Conv2d(in_channels, mid, 1, bias=False)
        self.norm1 = make_norm(norm, mid)
        self.conv2 = nn.Conv2d(mid, mid, 3, padding=1, bias=False)
        self.norm2 = make_norm(norm, mid)
        self.conv3 = nn.Conv2d(mid, channels, 1, bias=False)
        self.norm3 = make_norm(norm, channels)
        self.shortcut: nn.Module = nn.Identity()
        if in_channels != channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, channels, 1, bias=False), make_norm(norm, channels)
            )

    def forward(self, x: Tensor) -> Tensor:
        """relu(residual(x) + shortcut(x))."""
        y = F.relu(self.norm1(self.conv1(x)))
        y = F.relu(self.norm2(self.conv2(y)))
        return F.relu(self.norm3(self.conv3(y)) + self.shortcut(x))


class SpatialGate(nn.Module):
    """PAD-Net's message from one task to another: conv(f) gated by sigmoid(conv(f)), same f."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.features = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.mask = nn.Conv2d(channels, channels, 3, padding=1, bias=False)

    def forward(self, source: Tensor) -> Tensor:
        """W^f * source, multiplied element-wise by sigmoid(W^m * source)."""
        return self.features(source) * self.mask(source).sigmoid()


def resized(x: Tensor, size: tuple[int, int]) -> Tensor:
    """`x` bilinearly resized to `size` (H, W); unchanged when it already has that size."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


class Distillation(nn.Module):
    """Multi-modal distillation: f_t + sum over a != t of the gated message from a to t."""

    def __init__(self, tasks: list[str], channels: int) -> None:
        super().__init__()
        self.tasks = list(tasks)
        self.messages = nn.ModuleDict(
            {t: nn.ModuleDict({a: SpatialGate(channels) for a in tasks if a != t}) for t in tasks}
        )

    def forward(self, features: dict[str, Tensor]) -> dict[str, Tensor]:
        """Each task's map plus the messages of the others, computed at the target's size."""
        return {t: self.refine(t, features) for t in self.tasks}

    def refine(self, task: str, features: dict[str, Tensor]) -> Tensor:
        """The distilled map of one target task."""
        target = features[task]
        size = (int(target.shape[-2]), int(target.shape[-1]))
        out = target
        for source, gate in self.messages[task].items():
            out = out + gate(resized(features[source], size))
        return out


def decoder_widths(options: ExchangeOptions, context: StageContext) -> dict[str, int]:
    """Each exchanged task's decoder width, or a ValueError naming the task that has none."""
    where = f"{context.name or 'exchange'} ({options.type})"
    repeated = sorted({t for t in options.tasks if options.tasks.count(t) > 1})
    if repeated:
        raise ValueError(f"{where}: tasks {repeated} are listed more than once")
    for task in options.tasks:
        if task not in context.task_channels:
            raise ValueError(
                f"{where}: task {task!r} has no decoder features to exchange (tasks with "
                f"decoder features: {sorted(context.task_channels)})"
            )
    return {t: int(context.task_channels[t]) for t in options.tasks}


def projection(in_channels: int, out_channels: int) -> nn.Module:
    """1x1 conv between two widths, or the identity when they are equal."""
    if in_channels == out_channels:
        return nn.Identity()
    return nn.Conv2d(in_channels, out_channels, 1)


class PadNetExchange(FeatureStage):
    """PAD-Net: per task 2 bottlenecks, the distillation, 2 bottlenecks and a 1x1 conv (in place).

    The 1x1 conv maps back to the task's decoder width so that its own predictor reads the result.
    PAD-Net's intermediate per-task predictions (deep supervision before the distillation) are not
    made: an exchange module provides no outputs of its own.
    """

    def __init__(self, widths: dict[str, int], channels: int = 256, norm: Norm = "bn") -> None:
        super().__init__()
        self.tasks = list(widths)
        self.modifies = tuple(task_stream(t) for t in self.tasks)
        self.before = nn.ModuleDict(
            {t: nn.Sequential(Bottleneck(w, channels, norm), Bottleneck(channels, channels, norm))
             for t, w in widths.items()}
        )  # fmt: skip
        self.distill = Distillation(self.tasks, channels)
        self.after = nn.ModuleDict(
            {t: nn.Sequential(Bottleneck(channels, channels, norm),
                              Bottleneck(channels, channels, norm), nn.Conv2d(channels, w, 1))
             for t, w in widths.items()}
        )  # fmt: skip

    def forward(self, features: Features) -> None:
        """Replace each exchanged task's features by its PAD-Net refinement."""
        refined = self.distill({t: self.before[t](features.tasks[t]) for t in self.tasks})
        for task in self.tasks:
            features.tasks[task] = self.after[task](refined[task])


class PadNet3Exchange(FeatureStage):
    """3-ways PAD-Net's exchange: the distillation alone, at `channels` (128), `blocks` times.

    DenseMTL's reference runs each decoder's stages 4, 3 and 2, applies ONE distillation to the
    stage-2 features (128 channels) and then runs stages 1 and 0. Here an exchange acts on the
    features a decoder exposes (`decode`), so the faithful placement needs a decoder whose
    `decode` ends at stage 2 (the DenseMTL decoder, to be wired); with the widths equal to
    `channels` no projection is added. Otherwise 1x1 convs project each task to `channels` and
    back. `blocks` > 1 chains independent distillations (not in the reference).
    """

    def __init__(self, widths: dict[str, int], channels: int = 128, blocks: int = 1) -> None:
        super().__init__()
        self.tasks = list(widths)
        self.modifies = tuple(task_stream(t) for t in self.tasks)
        self.project_in = nn.ModuleDict({t: projection(w, channels) for t, w in widths.items()})
        self.blocks = nn.ModuleList(Distillation(self.tasks, channels) for _ in range(blocks))
        self.project_out = nn.ModuleDict({t: projection(channels, w) for t, w in widths.items()})

    def forward(self, features: Features) -> None:
        """Replace each exchanged task's features by their distilled version."""
        maps = {t: self.project_in[t](features.tasks[t]) for t in self.tasks}
        for block in self.blocks:
            maps = block(maps)
        for task in self.tasks:
            features.tasks[task] = self.project_out[task](maps[task])


@EXCHANGES.register("padnet", options=PadNetOptions)
def padnet(options: PadNetOptions, context: StageContext) -> PadNetExchange:
    """PAD-Net's distillation with its bottlenecks, between the listed tasks' decoders."""
    return PadNetExchange(decoder_widths(options, context), options.channels, options.norm)


@EXCHANGES.register("padnet3", options=PadNet3Options)
def padnet3(options: PadNet3Options, context: StageContext) -> PadNet3Exchange:
    """3-ways PAD-Net's distillation block(s) between the listed tasks' decoders."""
    return PadNet3Exchange(decoder_widths(options, context), options.channels, options.blocks)


__all__ = [
    "Bottleneck",
    "Distillation",
    "PadNet3Exchange",
    "PadNet3Options",
    "PadNetExchange",
    "PadNetOptions",
    "SpatialGate",
    "padnet",
    "padnet3",
]
