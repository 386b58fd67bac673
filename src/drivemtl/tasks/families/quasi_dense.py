"""The `quasi_dense` head family: QDTrack's embedding head and its association criterion.

It needs the object stream (proposals in training, detections at inference) and, in training, the
reference stream: the backbone + neck features and the proposals of each sample's reference frame
(`features.reference`, which MultiTaskNet fills on clips when a stage reads it).

Per key image, with s = key embeddings x reference embeddings (dot products) and target 1 where
a key RoI and a reference RoI belong to the same ground-truth track:
- multi-positive cross entropy log(1 + sum_pos sum_neg exp(s_neg - s_pos)) of every key RoI with
  at least one positive, computed as a log-sum-exp (`multi_positive_cross_entropy`);
- auxiliary L2 of the cosine similarities to the targets, negatives only penalised above the
  margin and the hardest ones kept up to a cap per positive (`auxiliary_l2`).
The task's loss is embed_weight x (mean CE) + aux_weight x (mean L2), each averaged over the key
images that contribute.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from drivemtl.models.features import OBJECTS, REFERENCE, FeatureSpec
from drivemtl.models.heads.embedding_head import (
    EmbeddingOutputs,
    EmbeddingSampling,
    QuasiDenseEmbeddingHead,
)
from drivemtl.structures.batch import Batch
from drivemtl.tasks.base import zero_loss
from drivemtl.tasks.families.base import HEAD_FAMILIES, HeadFamily, HeadOptions


def multi_positive_cross_entropy(similarity: Tensor, targets: Tensor) -> tuple[Tensor, int]:
    """(sum over rows, number of rows) of log(1 + sum_{p in pos} sum_{n in neg} exp(s_n - s_p))
    for the rows of `similarity` [K, R] with at least one positive in `targets` [K, R] (0 / 1).

    The double sum is exp(logsumexp_neg(s) + logsumexp_pos(-s)), so the loss is the log-sum-exp
    of [0, logsumexp_neg(s) + logsumexp_pos(-s)]; a row without negatives has loss 0.
    """
    positive = targets > 0
    valid = positive.any(dim=1)
    if not bool(valid.any()):
        return similarity.sum() * 0.0, 0
    s, pos = similarity[valid], positive[valid]
    minus_inf = torch.finfo(s.dtype).min
    lse_neg = torch.where(pos, minus_inf, s).logsumexp(dim=1)
    lse_pos = torch.where(pos, -s, minus_inf).logsumexp(dim=1)
    pair = lse_neg + lse_pos
    pair = torch.where((~pos).any(dim=1), pair, torch.full_like(pair, minus_inf))
    loss = torch.stack((torch.zeros_like(pair), pair), dim=1).logsumexp(dim=1)
    return loss.sum(), int(valid.sum())


def auxiliary_l2(
    cosine: Tensor, targets: Tensor, negative_margin: float = 0.1, max_negatives: float = 3.0
) -> tuple[Tensor, int]:
    """(sum, count) of squared errors of cosine similarities [K, R] to the 0 / 1 targets.

    Predictions are clamped to [0, 1] after subtracting `negative_margin` from the negatives'
    (a negative below the margin costs nothing); when negatives outnumber `max_negatives` per
    positive, only the `max_negatives x #positives` costliest negatives count.
    """
    positive = targets > 0
    pred = torch.where(positive, cosine, cosine - negative_margin).clamp(0.0, 1.0)
    error = (pred - positive.to(pred.dtype)) ** 2
    num_pos = int(positive.sum())
    neg_errors = error[~positive]
    limit = int(max_negatives * num_pos)
    if neg_errors.numel() > limit:
        neg_errors = neg_errors.topk(limit).values if limit > 0 else neg_errors[:0]
    kept = torch.cat((error[positive], neg_errors))
    return kept.sum(), int(kept.numel())


def match_targets(key_ids: Tensor, ref_ids: Tensor) -> Tensor:
    """[K, R] 1.0 where key RoI k and reference RoI r belong to the same track (id >= 0)."""
    return ((key_ids[:, None] == ref_ids[None, :]) & (ref_ids[None, :] >= 0)).float()


class QuasiDenseOptions(HeadOptions):
    """Embedding head widths, RoI sampling and loss weights (QDTrack's defaults)."""

    type: str = "quasi_dense"
    detector: dict[str, Any] = Field(
        default_factory=dict,
        description="detection head options when detection itself is not a task",
    )
    channels: int = Field(256, gt=0)
    num_convs: int = Field(4, ge=0)
    norm_groups: int = Field(32, gt=0, description="GroupNorm groups of the convs")
    fc_dim: int = Field(1024, gt=0)
    embed_dim: int = Field(256, gt=0)
    resolution: int = Field(7, gt=0, description="RoIAlign size")
    positive_iou: float = Field(0.7, gt=0.0, le=1.0)
    negative_iou: float = Field(0.3, ge=0.0, le=1.0)
    rois_per_image: int = Field(256, gt=0)
    positive_fraction: float = Field(0.5, gt=0.0, le=1.0)
    max_negatives_per_positive: float = Field(3.0, ge=0.0)
    add_ground_truth: bool = True
    embed_weight: float = Field(0.25, ge=0.0, description="multi-positive cross entropy")
    aux_weight: float = Field(1.0, ge=0.0, description="auxiliary cosine L2")
    aux_negative_margin: float = Field(0.1, ge=0.0)
    aux_max_negatives: float = Field(3.0, ge=0.0, description="hard negatives per positive")


@HEAD_FAMILIES.register("quasi_dense")
class QuasiDenseFamily(HeadFamily):
    """QDTrack embeddings for the task's detections (see the module docstring)."""

    Options = QuasiDenseOptions
    kinds = ("roi_embeddings",)
    needs = (OBJECTS, REFERENCE)

    def provider_options(self, stream: str) -> dict[str, Any]:
        """The `detector` options for the object stream's support detector."""
        return dict(self.options.detector) if stream == OBJECTS else {}

    def build(self, spec: FeatureSpec) -> nn.Module:
        """The embedding head of the configured widths."""
        o = self.options
        sampling = EmbeddingSampling(
            o.positive_iou, o.negative_iou, o.rois_per_image, o.positive_fraction,
            o.max_negatives_per_positive, o.add_ground_truth,
        )  # fmt: skip
        return QuasiDenseEmbeddingHead(
            spec, self.task.name, channels=o.channels, num_convs=o.num_convs,
            norm_groups=o.norm_groups, fc_dim=o.fc_dim, embed_dim=o.embed_dim,
            resolution=o.resolution, sampling=sampling,
        )  # fmt: skip

    def loss(self, outputs: EmbeddingOutputs, batch: Batch) -> Tensor:
        """embed_weight x mean multi-positive CE + aux_weight x mean auxiliary L2 over the key
        images labelled for the task; an exact zero when none is."""
        mask = self.task.labeled(batch)
        if not bool(mask.any()):
            return zero_loss(batch.images.device)
        if outputs.key_embeds is None or outputs.ref_embeds is None:
            raise ValueError("mot loss needs outputs of a forward pass with targets")
        if batch.reference is None:
            raise ValueError(
                f"task {self.task.name!r} trains on clips: set data.sets.<set>.clip for frames "
                f"{[m.name for m in batch.metas][:3]}"
            )
        o = self.options
        ce_terms, l2_terms = [], []
        anchor = sum(e.sum() for e in outputs.key_embeds) * 0.0  # keeps the graph connected
        for i in range(len(batch)):
            key, ref = outputs.key_embeds[i], outputs.ref_embeds[i]
            if not bool(mask[i]) or len(key) == 0 or len(ref) == 0:
                continue
            targets = match_targets(outputs.key_ids[i], outputs.ref_ids[i])  # type: ignore[index]
            ce, rows = multi_positive_cross_entropy(key @ ref.T, targets)
            if rows:
                ce_terms.append(ce / rows)
            cosine = F.normalize(key, dim=1) @ F.normalize(ref, dim=1).T
            l2, count = auxiliary_l2(cosine, targets, o.aux_negative_margin, o.aux_max_negatives)
            if count:
                l2_terms.append(l2 / count)
        loss = anchor + sum(e.sum() for e in outputs.ref_embeds) * 0.0
        if ce_terms:
            loss = loss + o.embed_weight * torch.stack(ce_terms).mean()
        if l2_terms:
            loss = loss + o.aux_weight * torch.stack(l2_terms).mean()
        return loss
