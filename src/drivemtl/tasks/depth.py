"""Monocular depth (DenseMTL): the head predicts inverse normalised depth d_far / d.

The loss is berHu (or L1) between predicted and true d_far / d on valid pixels (depth > 0), as in
DenseMTL; decoding returns metres, d = d_far / prediction.
"""

from __future__ import annotations

from typing import Literal

import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor

from drivemtl.structures.batch import Batch
from drivemtl.structures.predictions import FramePrediction
from drivemtl.tasks.base import TASKS, zero_loss
from drivemtl.tasks.dense import DenseTask
from drivemtl.tasks.losses import berhu, l1


class DepthOptions(BaseModel):
    """Depth head extras: the per-pixel loss and the normalising far distance d_far."""

    model_config = ConfigDict(extra="forbid")

    loss: Literal["berhu", "l1"] = "berhu"
    max_depth: float = Field(80.0, gt=0, description="d_far in metres")
    min_depth: float = Field(0.1, gt=0, description="decoded depth is clamped to [min, max]")


@TASKS.register("depth")
class DepthTask(DenseTask):
    """Per-pixel depth in metres; target [B, H, W] with 0 = invalid."""

    name = "depth"
    group = "geometry"
    metric = "RMSE"
    Extras = DepthOptions

    def branches(self) -> dict[str, int]:
        """One channel, turned positive by softplus into d_far / d."""
        return {"inverse": 1}

    def inverse_depth(self, outputs: dict[str, Tensor]) -> Tensor:
        """[B, H, W] predicted d_far / d (positive)."""
        return F.softplus(outputs["inverse"][:, 0])

    def pixel_loss(self, outputs: dict[str, Tensor], batch: Batch) -> Tensor:
        """berHu (or L1) on inverse normalised depth over valid pixels of labelled samples."""
        selected, mask = self.select(outputs, batch)
        if not bool(mask.any()):
            return zero_loss(batch.images.device)
        depth = self.target(batch, "depth", mask, selected["inverse"].device).float()
        valid = depth > 0
        target = self.options.max_depth / depth.clamp(min=1e-6)
        pred = self.inverse_depth(selected)
        fn = berhu if self.options.loss == "berhu" else l1
        return fn(pred, target, valid)

    def domain_map(self, outputs: dict[str, Tensor], batch: Batch) -> Tensor:
        """Depth normalised to [0, 1] by the depth range [min_depth, max_depth], [B, 1, h, w]
        (DenseMTL aligns the continuous normalised depth maps)."""
        opts = self.options
        inverse = self.inverse_depth(self.family.decode(outputs, batch))
        depth = (opts.max_depth / inverse.clamp(min=1e-6)).clamp(opts.min_depth, opts.max_depth)
        return ((depth - opts.min_depth) / (opts.max_depth - opts.min_depth))[:, None]

    def predictions(self, outputs: dict[str, Tensor], batch: Batch) -> list[FramePrediction]:
        """[H, W] depth in metres per sample."""
        inverse = self.inverse_depth({k: v.detach().float() for k, v in outputs.items()})
        predictions = self.new_predictions(batch)
        opts = self.options
        for pred, inv in zip(predictions, self.to_original(inverse[:, None], batch), strict=True):
            pred.depth = (opts.max_depth / inv[0].clamp(min=1e-6)).clamp(
                opts.min_depth, opts.max_depth
            )
        return predictions
