"""Surface normals (DenseMTL): unit camera-frame vectors, loss 1 - cos(pred, target)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from drivemtl.structures.batch import Batch
from drivemtl.structures.predictions import FramePrediction
from drivemtl.tasks.base import TASKS, zero_loss
from drivemtl.tasks.dense import DenseTask
from drivemtl.tasks.losses import cosine_loss


@TASKS.register("normals")
class NormalsTask(DenseTask):
    """Three-channel normal map; all-zero target vectors are invalid."""

    name = "normals"
    group = "geometry"
    metric = "mean_angle"

    def branches(self) -> dict[str, int]:
        """Three channels (x, y, z), normalised only when decoded."""
        return {"normals": 3}

    def pixel_loss(self, outputs: dict[str, Tensor], batch: Batch) -> Tensor:
        """Mean 1 - cos over valid pixels of the labelled samples."""
        selected, mask = self.select(outputs, batch)
        if not bool(mask.any()):
            return zero_loss(batch.images.device)
        target = self.target(batch, "normals", mask, selected["normals"].device)
        valid = target.abs().sum(dim=1) > 0
        return cosine_loss(selected["normals"], target, valid)

    def domain_map(self, outputs: dict[str, Tensor], batch: Batch) -> Tensor:
        """Unit normals mapped from [-1, 1] to [0, 1], [B, 3, h, w]."""
        normals = self.family.decode(outputs, batch)["normals"].float()
        return (F.normalize(normals, dim=1, eps=1e-8) + 1.0) / 2.0

    def predictions(self, outputs: dict[str, Tensor], batch: Batch) -> list[FramePrediction]:
        """[3, H, W] unit normals per sample; a flip negates the x component back."""
        raw = outputs["normals"].detach().float()
        predictions = self.new_predictions(batch)
        for i, (pred, n) in enumerate(zip(predictions, self.to_original(raw, batch), strict=True)):
            if batch.metas[i].flipped:
                n = n.clone()
                n[0] = -n[0]
            pred.normals = F.normalize(n, dim=0, eps=1e-8)
        return predictions
