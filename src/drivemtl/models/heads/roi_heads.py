"""RoI box head (Fast R-CNN on FPN): RoI sampling, two FC layers, class-specific regression.

Classes are 0..C-1 and the background is class C. Box deltas are class-specific ([R, 4C]) with the
standard (10, 10, 5, 5) weights. `detect` turns scores and deltas into final boxes with a score
threshold and class-aware NMS, keeping each detection's source box (`detect_with_sources`).

A RoI head whose task gets its own object vectors from an interaction block (VTDNet's
localization Intra-IB / Cross-IB) adds them to its pooled RoI features (`ObjectVectorInput`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict
from torch import Tensor, nn

from drivemtl.models.heads.anchors import match_boxes, sample_matches
from drivemtl.models.heads.rpn import RegressionLoss, regression_loss
from drivemtl.ops.boxes import clip_boxes, decode_boxes, encode_boxes
from drivemtl.ops.nms import batched_nms
from drivemtl.ops.roi_align import MultiScaleRoIAlign

BOX_WEIGHTS = (10.0, 10.0, 5.0, 5.0)


class RoIConfig(BaseModel):
    """RoI sampling, box head and detection hyper-parameters (Mask R-CNN defaults)."""

    model_config = ConfigDict(extra="forbid")

    batch_size_per_image: int = 512
    positive_fraction: float = 0.25
    fg_iou: float = 0.5
    bg_iou: float = 0.5
    pooler_resolution: int = 7
    pooler_strides: tuple[int, ...] = (4, 8, 16, 32)
    fc_dim: int = 1024
    score_threshold: float = 0.05
    nms_threshold: float = 0.5
    detections_per_image: int = 100
    reg_loss: RegressionLoss = "smooth_l1"
    smooth_l1_beta: float = 1.0 / 9


@dataclass
class SampledRoIs:
    """Per image: RoIs [Ri, 4], labels [Ri] (C = background), matched gt index [Ri] (-1 = none)."""

    boxes: list[Tensor]
    labels: list[Tensor]
    gt_index: list[Tensor]


@torch.no_grad()
def sample_rois(
    proposals: list[Tensor],
    gt_boxes: list[Tensor | None],
    gt_classes: list[Tensor | None],
    gt_ignore: list[Tensor | None],
    num_classes: int,
    config: RoIConfig,
) -> SampledRoIs:
    """Match proposals (plus the ground-truth boxes themselves) to ground truth and sample them.

    Images without ground truth (None) get no RoIs: they are not labelled for any box task.
    """
    boxes_out, labels_out, index_out = [], [], []
    for props, boxes, classes, ignore in zip(
        proposals, gt_boxes, gt_classes, gt_ignore, strict=True
    ):
        if boxes is None or classes is None:
            boxes_out.append(props.new_zeros((0, 4)))
            labels_out.append(torch.zeros(0, dtype=torch.int64, device=props.device))
            index_out.append(torch.zeros(0, dtype=torch.int64, device=props.device))
            continue
        boxes = boxes.to(props)
        usable = boxes if ignore is None else boxes[~ignore.to(torch.bool)]
        candidates = torch.cat((props, usable))
        matched = match_boxes(candidates, boxes, config.fg_iou, config.bg_iou, False, ignore)
        pos, neg = sample_matches(matched, config.batch_size_per_image, config.positive_fraction)
        keep = torch.cat((pos, neg))
        gt_index = torch.cat((matched[pos], torch.full_like(neg, -1)))
        labels = torch.cat(
            (classes.to(props.device)[matched[pos]], torch.full_like(neg, num_classes))
        )
        boxes_out.append(candidates[keep])
        labels_out.append(labels)
        index_out.append(gt_index)
    return SampledRoIs(boxes_out, labels_out, index_out)


class ObjectVectorInput(nn.Module):
    """Adds one object vector per RoI to its pooled features [R, C, r, r], broadcast over the
    r x r grid, through a zero-initialised linear layer from the vector width to C.

    Zero-initialised (weight and bias), so a head with this input starts as the head without it
    whatever the vectors are; the layer is used even when the widths match, because the vectors
    are not zero (they are the pooled RoI features plus the block's change).
    """

    def __init__(self, vector_channels: int, channels: int) -> None:
        super().__init__()
        self.proj = nn.Linear(vector_channels, channels)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, pooled: Tensor, vectors: Tensor) -> Tensor:
        """`pooled` [R, C, r, r] + proj(`vectors` [R, V]) per RoI."""
        if len(vectors) != len(pooled):
            raise ValueError(f"{len(vectors)} object vectors for {len(pooled)} RoIs")
        return pooled + self.proj(vectors).to(pooled.dtype)[:, :, None, None]


def add_object_vectors(
    vector_input: ObjectVectorInput | None, pooled: Tensor, vectors: Tensor | None, who: str
) -> Tensor:
    """`pooled` with the RoIs' object vectors added when the head reads them (`vector_input`),
    unchanged for a head without; a RuntimeError when the head reads vectors no block wrote."""
    if vector_input is None:
        return pooled
    if vectors is None:
        raise RuntimeError(
            f"{who} reads its task's object vectors, but no interaction block wrote them"
        )
    return vector_input(pooled, vectors)


class BoxHead(nn.Module):
    """MultiScaleRoIAlign (7x7) -> FC -> ReLU -> FC -> ReLU -> class logits [C+1], deltas [4C].

    With `vector_channels`, each RoI's object vector is added to its pooled features first.
    """

    def __init__(
        self,
        channels: int,
        num_classes: int,
        config: RoIConfig,
        vector_channels: int | None = None,
    ) -> None:
        super().__init__()
        self.config = config
        self.num_classes = num_classes
        self.pooler = MultiScaleRoIAlign(config.pooler_resolution, sampling_ratio=2)
        r = config.pooler_resolution
        self.fc1 = nn.Linear(channels * r * r, config.fc_dim)
        self.fc2 = nn.Linear(config.fc_dim, config.fc_dim)
        self.cls_score = nn.Linear(config.fc_dim, num_classes + 1)
        self.bbox_pred = nn.Linear(config.fc_dim, 4 * num_classes)
        nn.init.normal_(self.cls_score.weight, std=0.01)
        nn.init.normal_(self.bbox_pred.weight, std=0.001)
        nn.init.zeros_(self.cls_score.bias)
        nn.init.zeros_(self.bbox_pred.bias)
        # Created last, so that a head without vectors draws the same initial weights as before.
        self.vector_input = (
            ObjectVectorInput(vector_channels, channels) if vector_channels else None
        )

    def forward(
        self, maps: list[Tensor], boxes: list[Tensor], vectors: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """(class logits [R, C+1], class-specific deltas [R, 4C]) for the boxes of every image;
        `vectors` [R, V]: the boxes' object vectors (images concatenated), for a head that reads
        them."""
        pooled = self.pooler(maps, self.config.pooler_strides, boxes)
        return self.classify(add_object_vectors(self.vector_input, pooled, vectors, "box head"))

    def classify(self, pooled: Tensor) -> tuple[Tensor, Tensor]:
        """(class logits, deltas) of RoI features pooled to [R, C, r, r] (the exported part)."""
        x = F.relu(self.fc1(pooled.flatten(1)))
        x = F.relu(self.fc2(x))
        return self.cls_score(x), self.bbox_pred(x)


def box_loss(
    class_logits: Tensor,
    box_deltas: Tensor,
    rois: Tensor,
    labels: Tensor,
    matched_boxes: Tensor,
    num_classes: int,
    beta: float,
    loss: RegressionLoss = "smooth_l1",
) -> tuple[Tensor, Tensor]:
    """(CE over sampled RoIs, regression of the true class's deltas on positives / #RoIs).

    The regression is smooth-L1 with `beta` or, with `loss="l1"`, plain L1 (VTDNet's L_D).
    """
    if labels.numel() == 0:
        zero = class_logits.sum() * 0.0
        return zero, zero
    cls = F.cross_entropy(class_logits, labels)
    positive = torch.nonzero(labels < num_classes).squeeze(1)
    deltas = box_deltas.view(-1, num_classes, 4)[positive, labels[positive]]
    target = encode_boxes(matched_boxes[positive], rois[positive], BOX_WEIGHTS)
    reg = regression_loss(deltas, target, loss, beta)
    return cls, reg / labels.numel()


@torch.no_grad()
def detect(
    class_logits: Tensor,
    box_deltas: Tensor,
    boxes: list[Tensor],
    image_sizes: list[tuple[int, int]],
    num_classes: int,
    config: RoIConfig,
) -> tuple[list[Tensor], list[Tensor], list[Tensor]]:
    """Per image (boxes [N, 4], scores [N], classes [N]): threshold, class-aware NMS, top-k."""
    out_boxes, out_scores, out_classes, _ = detect_with_sources(
        class_logits, box_deltas, boxes, image_sizes, num_classes, config
    )
    return out_boxes, out_scores, out_classes


@torch.no_grad()
def detect_with_sources(
    class_logits: Tensor,
    box_deltas: Tensor,
    boxes: list[Tensor],
    image_sizes: list[tuple[int, int]],
    num_classes: int,
    config: RoIConfig,
) -> tuple[list[Tensor], list[Tensor], list[Tensor], list[Tensor]]:
    """`detect`, plus per image the index [N] of each detection's source box in `boxes[i]`
    (followed through the score threshold, the size filter, NMS and top-k)."""
    probs = class_logits.float().softmax(dim=1)[:, :num_classes]
    decoded = decode_boxes(box_deltas.float(), torch.cat(boxes).float(), BOX_WEIGHTS)
    decoded = decoded.view(-1, num_classes, 4)
    out_boxes, out_scores, out_classes, out_sources = [], [], [], []
    start = 0
    for image_boxes, size in zip(boxes, image_sizes, strict=True):
        n = image_boxes.shape[0]
        scores = probs[start : start + n]
        cand = clip_boxes(decoded[start : start + n], size)
        start += n
        classes = torch.arange(num_classes, device=scores.device).expand_as(scores)
        sources = torch.arange(n, device=scores.device)[:, None].expand_as(scores)
        keep = scores > config.score_threshold
        cand, scores, classes, sources = cand[keep], scores[keep], classes[keep], sources[keep]
        wh = cand[:, 2:] - cand[:, :2]
        valid = (wh > 1e-2).all(dim=1)
        cand, scores, classes, sources = cand[valid], scores[valid], classes[valid], sources[valid]
        keep = batched_nms(cand, scores, classes, config.nms_threshold)
        keep = keep[: config.detections_per_image]
        out_boxes.append(cand[keep])
        out_scores.append(scores[keep])
        out_classes.append(classes[keep])
        out_sources.append(sources[keep])
    return out_boxes, out_scores, out_classes, out_sources
