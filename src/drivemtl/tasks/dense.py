"""Common base of the per-pixel tasks: branches, labelled-sample selection, map decoding."""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
from torch import Tensor

from drivemtl.structures.batch import Batch
from drivemtl.structures.predictions import FramePrediction
from drivemtl.tasks.base import Task, empty_predictions, require_target
from drivemtl.tasks.coords import dense_to_original
from drivemtl.tasks.families.dense import DenseOptions

__all__ = ["DenseOptions", "DenseTask"]


def rows(t: Tensor, mask: Tensor) -> Tensor:
    """`t[mask]` along the batch dimension, or `t` itself when every row is selected.

    A boolean index of a full-resolution map costs a copy forward and a zero-filled scatter
    backward; most batches come from one image set and label a task in every sample.
    """
    return t if bool(mask.all()) else t[mask]


class DenseTask(Task):
    """A task predicting maps at input size; subclasses set `branches()`, `pixel_loss` and
    `predictions` (the per-pixel loss is what per-pixel head families train with)."""

    kind = "dense"
    default_head = "semantic_fpn"
    # The data field holding the task's per-pixel class map (255 = ignore), when it predicts one
    # with a single branch; set-prediction families (MaskFormer) train on it through the
    # class-map hooks below, which a task with another target layout overrides (lanes).
    target_field: ClassVar[str | None] = None

    def branches(self) -> dict[str, int]:
        """Output branch name -> channels of the decoder."""
        raise NotImplementedError

    def pixel_loss(self, outputs: dict[str, Tensor], batch: Batch) -> Tensor:
        """The per-pixel loss of the branch maps over the labelled samples."""
        raise NotImplementedError

    def select(self, outputs: dict[str, Tensor], batch: Batch) -> tuple[dict[str, Tensor], Tensor]:
        """The outputs restricted to labelled samples, and the [B] labelled mask."""
        mask = self.labeled(batch).to(next(iter(outputs.values())).device)
        return {k: rows(v, mask) for k, v in outputs.items()}, mask

    def target(self, batch: Batch, field: str, mask: Tensor, device: torch.device) -> Tensor:
        """The batch's `field` target of the labelled samples (`mask` as from `select`)."""
        return rows(require_target(batch, field, self.name), mask.to(batch.images.device)).to(
            device
        )

    def to_original(
        self, maps: Tensor, batch: Batch, mode: Literal["bilinear", "nearest"] = "bilinear"
    ) -> list[Tensor]:
        """Each sample's [C, H, W] map over the original image."""
        return [
            dense_to_original(maps[i], meta, batch.image_sizes[i], mode=mode)
            for i, meta in enumerate(batch.metas)
        ]

    def supports_class_maps(self) -> bool:
        """Whether the class-map hooks work: a `target_field` class map and a single branch."""
        return self.target_field is not None and len(self.branches()) == 1

    def num_map_classes(self) -> int:
        """Number of classes of the per-pixel class map (`class_map_target`), 255 excluded."""
        self._require_class_maps()
        return next(iter(self.branches().values()))

    def class_map_target(self, batch: Batch, mask: Tensor, device: torch.device) -> Tensor:
        """[n, H, W] int64 class map of the `mask`-selected samples (255 = ignore)."""
        self._require_class_maps()
        assert self.target_field is not None
        return self.target(batch, self.target_field, mask, device)

    def branch_outputs_from_class_scores(self, scores: Tensor) -> dict[str, Tensor]:
        """Branch maps, as the per-pixel decoder returns them, from class probabilities
        [B, K, H, W] (summing to 1 over K): their log, so that a softmax gives them back."""
        self._require_class_maps()
        name = next(iter(self.branches()))
        return {name: scores.clamp_min(torch.finfo(scores.dtype).tiny).log()}

    def _require_class_maps(self) -> None:
        if not self.supports_class_maps():
            raise NotImplementedError(
                f"task {self.name!r} has no single per-pixel class map (target_field / branches)"
            )

    def new_predictions(self, batch: Batch) -> list[FramePrediction]:
        """Empty per-sample predictions to fill in."""
        return empty_predictions(batch)
