"""Common base of the per-pixel tasks: head options, decoder factory, labelled-sample selection."""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from torch import Tensor, nn

from drivemtl.models.heads import HEADS
from drivemtl.models.heads.features import FeatureSpec
from drivemtl.structures.batch import Batch
from drivemtl.structures.predictions import FramePrediction
from drivemtl.tasks.base import HeadOptions, Task, empty_predictions
from drivemtl.tasks.coords import dense_to_original


class DenseOptions(HeadOptions):
    """Options of a dense decoder head (the Semantic-FPN decoder by default)."""

    type: str = "semantic_fpn"
    channels: int = Field(128, gt=0, description="width of the aggregated stride-4 features")
    strides: tuple[int, ...] = (4, 8, 16, 32)
    branch_convs: int = Field(0, ge=0, description="extra conv+GN+ReLU layers before the output")


class DenseTask(Task):
    """A task predicting maps at input size; subclasses set `branches()` and the loss/decoding."""

    Options = DenseOptions

    def branches(self) -> dict[str, int]:
        """Output branch name -> channels of the decoder."""
        raise NotImplementedError

    def build_head(self, spec: FeatureSpec) -> nn.Module:
        """A dense decoder of the configured type with this task's output branches."""
        opts = self.options
        return HEADS.get(opts.type)(
            spec,
            outputs=self.branches(),
            channels=opts.channels,
            strides=tuple(opts.strides),
            branch_convs=opts.branch_convs,
        )

    def select(self, outputs: dict[str, Tensor], batch: Batch) -> tuple[dict[str, Tensor], Tensor]:
        """The outputs restricted to labelled samples, and the [B] labelled mask."""
        mask = self.labeled(batch).to(next(iter(outputs.values())).device)
        return {k: v[mask] for k, v in outputs.items()}, mask

    def to_original(
        self, maps: Tensor, batch: Batch, mode: Literal["bilinear", "nearest"] = "bilinear"
    ) -> list[Tensor]:
        """Each sample's [C, H, W] map over the original image."""
        return [
            dense_to_original(maps[i], meta, batch.image_sizes[i], mode=mode)
            for i, meta in enumerate(batch.metas)
        ]

    def new_predictions(self, batch: Batch) -> list[FramePrediction]:
        """Empty per-sample predictions to fill in."""
        return empty_predictions(batch)
