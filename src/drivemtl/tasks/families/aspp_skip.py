"""DenseMTL's dense head family: an ASPP + skip decoder trained with multi-scale supervision.

Serves every dense task. The module (`ASPPSkipDecoder`) reads the backbone levels C2..C5 (not the
FPN): ASPP on C5, decoder blocks with encoder skips, and side outputs, one conv per task branch,
at scale 0 (the prediction) and at the supervised intermediate scales. Class tasks (integer
targets: semantic, drivable, lanes, edges) get 1x1 side convs; regression tasks (floating-point
targets: depth, normals) get 3x3 ones. Side outputs are raw: where DenseMTL puts a sigmoid on
regression outputs, each task applies its own activation in `pixel_loss` and `predictions`
(softplus for depth, normalisation for normals), so this head trains and decodes like any other.

Criterion (DenseMTL supplementary, Eq. 6): every side output is upsampled (bilinear) to the input
size and scored by the task's per-pixel loss; the loss is L(scale 0) + the mean of L(s) over the
supervised intermediate scales, i.e. L0 + L1 for the paper's scales (0, 1). `scale_loss: mean`
averages all scales instead, as the authors' code does ((L0 + L1) / 2). Decoding uses scale 0.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import Tensor, nn

from drivemtl.models.features import FeatureSpec
from drivemtl.models.heads.aspp_decoder import NORMS, SKIP_LEVELS, ASPPSkipDecoder, ScaleOutputs
from drivemtl.structures.batch import Batch
from drivemtl.tasks.families.base import HEAD_FAMILIES, HeadFamily, HeadOptions

__all__ = ["ASPPSkipFamily", "ASPPSkipOptions", "is_regression"]


class ASPPSkipOptions(HeadOptions):
    """Options of the ASPP + skip decoder (defaults: DenseMTL's setting)."""

    type: str = "aspp_skip"
    channels: tuple[int, ...] = Field(
        (256, 256, 128, 128, 64), description="decoder block widths, top (coarsest) block first"
    )
    aspp_channels: int = Field(256, gt=0)
    aspp_rates: tuple[int, ...] = (6, 12, 18)
    aspp_pooling: bool = Field(True, description="the image-pooling branch")
    aspp_dropout: float = Field(0.5, ge=0.0, lt=1.0)
    aspp_norm: Literal[NORMS] = "bn"  # type: ignore[valid-type]
    supervised_scales: tuple[int, ...] = Field(
        (0, 1), description="decoder scales (1 / 2**s of the input) whose side outputs are trained"
    )
    scale_loss: Literal["paper", "mean"] = Field(
        "paper", description="paper: L0 + mean of the other scales; mean: mean of every scale"
    )
    exchange_scale: int = Field(
        1, ge=0, description="scale of the task features that exchange modules see"
    )
    skip_channels: tuple[int, int, int] | None = Field(
        None, description="channels of C2, C3, C4 (default: C5's channels / 8, / 4, / 2)"
    )

    @model_validator(mode="after")
    def _scales(self) -> ASPPSkipOptions:
        """Scale 0 is always supervised (the prediction); every scale names a decoder block."""
        count = len(self.channels)
        if 0 not in self.supervised_scales:
            raise ValueError("supervised_scales must include 0 (the prediction)")
        if any(not 0 <= s < count for s in (*self.supervised_scales, self.exchange_scale)):
            raise ValueError(f"scales must be in 0..{count - 1} for {count} decoder blocks")
        return self


def is_regression(task: object) -> bool:
    """Whether a dense task regresses values (all its dense targets are floating point)."""
    dense = [f for f in getattr(task, "data_fields", ()) if f.kind == "dense"]
    return bool(dense) and all(f.dtype.is_floating_point for f in dense)


def resize_maps(maps: dict[str, Tensor], size: tuple[int, int]) -> dict[str, Tensor]:
    """Every map bilinearly resized to `size` (unchanged when already there)."""
    return {
        k: v
        if tuple(v.shape[-2:]) == tuple(size)
        else F.interpolate(v, size=size, mode="bilinear", align_corners=False)
        for k, v in maps.items()
    }


@HEAD_FAMILIES.register("aspp_skip")
class ASPPSkipFamily(HeadFamily):
    """ASPP + skip decoder with side outputs per `task.branches()` entry, multi-scale criterion."""

    Options = ASPPSkipOptions
    kinds = ("dense",)

    def skip_channels(self, spec: FeatureSpec) -> dict[int, int]:
        """Channels of C2..C4: the option, else ResNet's pyramid below C5 (halving per level)."""
        given = self.options.skip_channels
        if given is not None:
            return dict(zip(SKIP_LEVELS, given, strict=True))
        return {level: spec.image_channels >> (5 - level) for level in SKIP_LEVELS}

    def build(self, spec: FeatureSpec) -> nn.Module:
        """The decoder on C2..C5 (described by `spec.image_channels`, C5's width)."""
        opts = self.options
        return ASPPSkipDecoder(
            spec.image_channels,
            self.skip_channels(spec),
            outputs=self.task.branches(),
            channels=opts.channels,
            aspp_channels=opts.aspp_channels,
            aspp_rates=opts.aspp_rates,
            aspp_pooling=opts.aspp_pooling,
            aspp_dropout=opts.aspp_dropout,
            aspp_norm=opts.aspp_norm,
            supervised_scales=opts.supervised_scales,
            exchange_scale=opts.exchange_scale,
            side_kernel=3 if is_regression(self.task) else 1,
            name=self.task.name,
        )

    def scale_losses(self, outputs: ScaleOutputs, batch: Batch) -> dict[int, Tensor]:
        """Scale -> the task's per-pixel loss of that scale's side output at input size."""
        size = (int(batch.images.shape[-2]), int(batch.images.shape[-1]))
        losses = {0: self.task.pixel_loss(resize_maps(dict(outputs), size), batch)}
        side = getattr(outputs, "side", {})
        for s in self.options.supervised_scales:
            if s == 0:
                continue
            if s not in side:
                raise ValueError(
                    f"aspp_skip ({self.task.name}): no side output at scale {s}; the head must "
                    "run with the batch (training targets) for its multi-scale loss"
                )
            losses[s] = self.task.pixel_loss(resize_maps(side[s], size), batch)
        return losses

    def loss(self, outputs: ScaleOutputs, batch: Batch) -> Tensor:
        """Multi-scale loss: L0 + mean over the other scales ("paper"), or the mean of all."""
        losses = self.scale_losses(outputs, batch)
        if self.options.scale_loss == "mean":
            return torch.stack(list(losses.values())).mean()
        others = [v for s, v in losses.items() if s != 0]
        return losses[0] + torch.stack(others).mean() if others else losses[0]

    def decode(self, outputs: ScaleOutputs, batch: Batch) -> dict[str, Tensor]:
        """The scale-0 branch maps (the prediction)."""
        return dict(outputs)
