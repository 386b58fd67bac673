"""QDTrack's quasi-dense embedding head: one appearance vector per RoI for association.

RoIAlign 7x7 features of strides 4-32 -> `num_convs` x (3x3 conv + GroupNorm + ReLU) -> flatten ->
FC `fc_dim` + ReLU -> FC `embed_dim` (the last layer initialised N(0, 0.01), bias 0).

In training (a batch given) the head samples its own RoIs against the ground truth of the key and
of the reference frame (`sample_embedding_rois`): the key frame embeds its positive RoIs, the
reference frame all its sampled RoIs, each tagged with the track id of its ground-truth object
(-1 for background). The reference frame's proposals and features come from the reference stream
(`features.reference`). At inference it embeds the detections of the object stream.

When an interaction block writes the task's own object vectors (`spec.object_vectors`), each
RoI's vector is added to its pooled features (`ObjectVectorInput`): at inference the vector of
the proposal a detection came from; in training the key RoIs are drawn from the detector's
sampled RoIs and the reference RoIs from the reference frame's proposals (no ground-truth boxes
added), the boxes the blocks pooled their vectors from, so every sampled RoI has one.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import Tensor, nn

from drivemtl.models.features import OBJECTS, PIXEL, REFERENCE, Features, FeatureSpec
from drivemtl.models.heads.anchors import BACKGROUND, match_boxes
from drivemtl.models.heads.mask_head import vector_input
from drivemtl.models.heads.roi_heads import add_object_vectors
from drivemtl.ops.roi_align import MultiScaleRoIAlign
from drivemtl.structures.batch import Batch
from drivemtl.structures.instances import Instances


@dataclass(frozen=True)
class EmbeddingSampling:
    """RoI sampling for the embeddings (QDTrack's defaults)."""

    positive_iou: float = 0.7
    negative_iou: float = 0.3
    rois_per_image: int = 256
    positive_fraction: float = 0.5
    max_negatives_per_positive: float = 3.0
    add_ground_truth: bool = True


@dataclass
class SampledEmbeddingRoIs:
    """Per image: sampled boxes, the track id of each one's object (-1: background), whether
    it is positive, and its row among the candidates (the proposals, then the added
    ground-truth boxes)."""

    boxes: Tensor
    track_ids: Tensor
    positive: Tensor
    index: Tensor | None = None


@dataclass
class EmbeddingOutputs:
    """Raw outputs of the embedding head.

    Training: per image, the key frame's positive RoI embeddings `key_embeds` [Pi, D] with their
    `key_ids`, and the reference frame's sampled RoI embeddings `ref_embeds` [Ri, D] with their
    `ref_ids` (-1 for background); images the head was not trained on have empty rows.
    Inference: `embeds` [Ni, D] of the object stream's detections `boxes` / `classes` / `scores`
    (padded-input pixels), per image.
    """

    key_embeds: list[Tensor] | None = None
    key_ids: list[Tensor] | None = None
    ref_embeds: list[Tensor] | None = None
    ref_ids: list[Tensor] | None = None
    embeds: list[Tensor] | None = None
    boxes: list[Tensor] | None = None
    classes: list[Tensor] | None = None
    scores: list[Tensor] | None = None


def sample_embedding_rois(
    proposals: Tensor,
    gt_boxes: Tensor,
    gt_track_ids: Tensor,
    config: EmbeddingSampling,
    gt_ignore: Tensor | None = None,
    generator: torch.Generator | None = None,
) -> SampledEmbeddingRoIs:
    """Sample RoIs of one image for the embeddings.

    Candidates are the proposals (plus the non-ignored ground-truth boxes). IoU >= positive_iou
    with a ground-truth box: positive (tagged with its track id); max IoU < negative_iou:
    negative; in between, or near an ignore region: unused. At most rois_per_image *
    positive_fraction positives, then negatives up to rois_per_image in all and at most
    max_negatives_per_positive per positive (at least one positive counted), drawn at random.
    """
    gt_boxes = gt_boxes.to(proposals)
    candidates = proposals
    if config.add_ground_truth:
        usable = gt_boxes if gt_ignore is None else gt_boxes[~gt_ignore.to(torch.bool)]
        candidates = torch.cat((proposals, usable))
    matched = match_boxes(
        candidates, gt_boxes, config.positive_iou, config.negative_iou, False, gt_ignore
    )
    positive = torch.nonzero(matched >= 0).squeeze(1)
    negative = torch.nonzero(matched == BACKGROUND).squeeze(1)
    num_pos = min(positive.numel(), int(config.rois_per_image * config.positive_fraction))
    cap = int(config.max_negatives_per_positive * max(num_pos, 1))
    num_neg = min(negative.numel(), config.rois_per_image - num_pos, cap)
    device = candidates.device
    pos = positive[torch.randperm(positive.numel(), generator=generator).to(device)[:num_pos]]
    neg = negative[torch.randperm(negative.numel(), generator=generator).to(device)[:num_neg]]
    ids = gt_track_ids.to(device)[matched[pos]]
    return SampledEmbeddingRoIs(
        boxes=torch.cat((candidates[pos], candidates[neg])),
        track_ids=torch.cat((ids, torch.full_like(neg, -1))),
        positive=torch.cat(
            (torch.ones_like(pos, dtype=torch.bool), torch.zeros_like(neg, dtype=torch.bool))
        ),
        index=torch.cat((pos, neg)),
    )


def _tracked(inst: Instances | None) -> bool:
    return inst is not None and inst.track_ids is not None


class QuasiDenseEmbeddingHead(nn.Module):
    """The embedding head (see the module docstring); `task` names the task whose labelled
    samples it trains on."""

    needs = (PIXEL, OBJECTS, REFERENCE)

    def __init__(
        self,
        spec: FeatureSpec,
        task: str = "mot",
        channels: int = 256,
        num_convs: int = 4,
        norm_groups: int = 32,
        fc_dim: int = 1024,
        embed_dim: int = 256,
        resolution: int = 7,
        strides: tuple[int, ...] = (4, 8, 16, 32),
        sampling: EmbeddingSampling | None = None,
    ) -> None:
        super().__init__()
        if num_convs and channels % norm_groups:
            raise ValueError(f"embedding head: {channels} channels are not divisible into "
                             f"{norm_groups} GroupNorm groups")  # fmt: skip
        self.task = task
        self.strides = tuple(strides)
        self.sampling = sampling or EmbeddingSampling()
        self.embed_dim = embed_dim
        self.pooler = MultiScaleRoIAlign(resolution, sampling_ratio=2)
        layers: list[nn.Module] = []
        width = spec.pixel_channels
        for _ in range(num_convs):
            layers += [nn.Conv2d(width, channels, 3, padding=1, bias=False),
                       nn.GroupNorm(norm_groups, channels), nn.ReLU(inplace=True)]  # fmt: skip
            width = channels
        self.convs = nn.Sequential(*layers)
        self.fc = nn.Linear(width * resolution * resolution, fc_dim)
        self.embed = nn.Linear(fc_dim, embed_dim)
        for m in self.convs:
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        nn.init.kaiming_uniform_(self.fc.weight, a=1)
        nn.init.zeros_(self.fc.bias)
        nn.init.normal_(self.embed.weight, std=0.01)
        nn.init.zeros_(self.embed.bias)
        self.vector_input = vector_input(spec, task)

    def embeddings(self, pooled: Tensor) -> Tensor:
        """[R, embed_dim] embeddings of RoI features pooled to [R, C, r, r]."""
        x = self.convs(pooled).flatten(1)
        return self.embed(torch.relu(self.fc(x)))

    def _embed(
        self, features: Features, boxes: list[Tensor], sources: list[Tensor] | None = None
    ) -> list[Tensor]:
        """Per image embeddings of `boxes`; `sources`: each box's row among the object vectors
        of `features.objects` (for a head that reads them)."""
        if sum(len(b) for b in boxes) == 0:
            zero = features.pixel[0].new_zeros((0, self.embed_dim))
            # Keep the graph connected so an all-empty batch still backpropagates (to zero).
            zero = zero + 0.0 * sum(p.sum() for p in self.parameters())
            return [zero[:0] for _ in boxes]
        pooled = self.pooler(features.levels(self.strides), self.strides, boxes)
        if self.vector_input is not None:
            objects = features.require_objects("the quasi-dense embedding head")
            vectors = objects.task_vectors_at(self.task, sources or [])
            pooled = add_object_vectors(self.vector_input, pooled, vectors, "embedding head")
        return list(torch.split(self.embeddings(pooled), [len(b) for b in boxes]))

    def forward(self, features: Features, batch: Batch | None = None) -> EmbeddingOutputs:
        """Key / reference RoI embeddings (training) or detection embeddings (inference)."""
        objects = features.require_objects("the quasi-dense embedding head")
        if batch is None:
            if objects.detections is None:
                raise RuntimeError("embedding detections needs the detection head's detections")
            sources = objects.det_sources or [
                torch.arange(len(d), device=d.device) for d in objects.detections
            ]
            return EmbeddingOutputs(
                embeds=self._embed(features, objects.detections, sources),
                boxes=objects.detections,
                classes=objects.det_classes,
                scores=objects.det_scores,
            )
        return self._train_outputs(features, batch)

    def _train_outputs(self, features: Features, batch: Batch) -> EmbeddingOutputs:
        objects = features.require_objects("the quasi-dense embedding head")
        reference, ref_batch = features.reference, batch.reference
        labeled = batch.is_labeled(self.task)
        device = features.pixel[0].device
        empty = torch.zeros((0, 4), device=device)
        no_ids = torch.zeros((0,), dtype=torch.int64, device=device)
        reads = self.vector_input is not None
        key_boxes, key_ids, ref_boxes, ref_ids = [], [], [], []
        key_rows, ref_rows = [], []
        for i in range(len(batch)):
            inst = batch.instances[i]
            ref_inst = ref_batch.instances[i] if ref_batch is not None else None
            if reference is None or not bool(labeled[i]) or not _tracked(inst):
                key_boxes.append(empty)
                key_ids.append(no_ids)
                ref_boxes.append(empty)
                ref_ids.append(no_ids)
                key_rows.append(no_ids)
                ref_rows.append(no_ids)
                continue
            if not _tracked(ref_inst):
                raise ValueError(
                    f"frame {batch.metas[i].name}: labelled for {self.task}, but its reference "
                    f"frame {ref_batch.metas[i].name} has no track ids"  # type: ignore[union-attr]
                )
            key_candidates = objects.proposals[i]
            if reads:  # the boxes that carry object vectors: the detector's sampled RoIs
                key_candidates = _required(objects.rois, "sampled RoIs")[i]
            key = self._sample(key_candidates, inst, device, reads)  # type: ignore[arg-type]
            ref_props = reference.objects.proposals[i] if reference.objects is not None else empty
            ref = self._sample(ref_props, ref_inst, device, reads)  # type: ignore[arg-type]
            keep = key.positive & (key.track_ids >= 0)  # objects without an id are not keys
            key_boxes.append(key.boxes[keep])
            key_ids.append(key.track_ids[keep])
            ref_boxes.append(ref.boxes)
            ref_ids.append(ref.track_ids)
            key_rows.append(key.index[keep])  # type: ignore[index]
            ref_rows.append(ref.index)  # type: ignore[arg-type]
        key_embeds = self._embed(features, key_boxes, key_rows)
        ref_embeds = (
            self._embed(reference, ref_boxes, ref_rows) if reference is not None else key_embeds
        )
        return EmbeddingOutputs(
            key_embeds=key_embeds, key_ids=key_ids, ref_embeds=ref_embeds, ref_ids=ref_ids
        )

    def _sample(
        self, proposals: Tensor, inst: Instances, device: torch.device, boxes_only: bool = False
    ) -> SampledEmbeddingRoIs:
        """Sample one image's RoIs; `boxes_only`: among `proposals` alone (no ground truth
        added), for a head whose RoIs must be rows of the object vectors."""
        sampling = replace(self.sampling, add_ground_truth=False) if boxes_only else self.sampling
        return sample_embedding_rois(
            proposals.detach().to(device).float(),
            inst.boxes.to(device).float(),
            inst.track_ids.to(device),  # type: ignore[union-attr]
            sampling,
            None if inst.ignore is None else inst.ignore.to(device),
        )


def _required(value: list[Tensor] | None, what: str) -> list[Tensor]:
    """`value`, or a RuntimeError saying the object stream lacks `what`."""
    if value is None:
        raise RuntimeError(f"the embedding head reads object vectors but the object stream has "
                           f"no {what}")  # fmt: skip
    return value
