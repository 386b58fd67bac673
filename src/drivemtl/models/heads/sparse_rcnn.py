"""Sparse R-CNN (Sun et al. 2021): learnable proposals refined by dynamic instance interaction.

A fixed set of learnable proposal boxes (initialised to the whole image) and proposal features
goes through `num_stages` identical stages. Each stage lets the proposal features attend to each
other, pools every current box from P2..P5 (RoIAlign 7x7), mixes the pooled feature with
parameters generated from its proposal feature (dynamic convolution), and predicts sigmoid class
logits and box deltas applied to the current boxes. Boxes are detached between stages; the
outputs of every stage are kept for deep supervision. Matching is one-to-one (Hungarian), so
inference needs no NMS: the detections are the top-k of proposals x classes of the last stage.

The head provides the object stream: in training the final-stage boxes with their matched
ground truth (label and index into `batch.instances`), at inference the detections.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor, nn

from drivemtl.models.features import OBJECTS, PIXEL, Features, FeatureSpec, ObjectFeatures
from drivemtl.models.heads.detector import ground_truth
from drivemtl.ops.boxes import box_cxcywh_to_xyxy, clip_boxes, decode_boxes, generalized_box_iou
from drivemtl.ops.matching import hungarian_match
from drivemtl.ops.roi_align import MultiScaleRoIAlign
from drivemtl.ops.set_losses import pairwise_class_focal_cost
from drivemtl.structures.batch import Batch

# Largest log-scale of a decoded width / height (the reference's value, log(100000 / 16)).
SCALE_CLAMP = math.log(100000.0 / 16)


class SparseRCNNConfig(BaseModel):
    """Sparse R-CNN hyper-parameters (the reference's defaults) and its matching costs."""

    model_config = ConfigDict(extra="forbid")

    num_proposals: int = Field(300, gt=0)
    hidden_dim: int = Field(256, gt=0)
    num_stages: int = Field(6, gt=0)
    num_heads: int = Field(8, gt=0, description="self-attention heads among the proposals")
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    ffn_dim: int = Field(2048, gt=0)
    dynamic_dim: int = Field(64, gt=0, description="width of the two dynamic 1x1 convs")
    num_cls_layers: int = Field(1, ge=0)
    num_reg_layers: int = Field(3, ge=0)
    pooler_resolution: int = Field(7, gt=0)
    sampling_ratio: int = 2
    pooler_strides: tuple[int, ...] = (4, 8, 16, 32)
    prior_prob: float = Field(0.01, gt=0.0, lt=1.0)
    box_weights: tuple[float, float, float, float] = (2.0, 2.0, 1.0, 1.0)
    scale_clamp: float = Field(SCALE_CLAMP, gt=0.0)
    detections_per_image: int = Field(100, gt=0)
    focal_alpha: float = 0.25
    focal_gamma: float = Field(2.0, ge=0.0)
    class_cost: float = Field(2.0, ge=0.0)
    l1_cost: float = Field(5.0, ge=0.0)
    giou_cost: float = Field(2.0, ge=0.0)


@dataclass
class SetTargets:
    """Ground truth of one image for set matching: ignore regions dropped.

    `index` maps each kept box to its index in `batch.instances[i]`.
    """

    boxes: Tensor
    classes: Tensor
    index: Tensor


@dataclass
class SparseRCNNOutputs:
    """Raw outputs: per stage `stage_logits [B, Q, C]` and `stage_boxes [B, Q, 4]` (input pixels).

    Inference also fills `boxes`, `scores`, `classes` (per image, the detection task's fields).
    `image_sizes` are each image's (h, w), the frame the L1 terms are normalised by.
    """

    stage_logits: list[Tensor]
    stage_boxes: list[Tensor]
    image_sizes: list[tuple[int, int]]
    boxes: list[Tensor] | None = None
    scores: list[Tensor] | None = None
    classes: list[Tensor] | None = None


def set_targets(batch: Batch, device: torch.device, num_classes: int) -> list[SetTargets | None]:
    """Per image the boxes to match (ignore / crowd regions and unpredicted classes dropped),
    None for images without instances."""
    out: list[SetTargets | None] = []
    for boxes, classes, ignore in zip(*ground_truth(batch, device, num_classes), strict=True):
        if boxes is None:
            out.append(None)
            continue
        keep = torch.ones(len(boxes), dtype=torch.bool, device=device)
        if ignore is not None:
            keep = ~ignore
        index = torch.nonzero(keep).squeeze(1)
        out.append(SetTargets(boxes[index], classes[index], index))
    return out


def image_scale(size: tuple[int, int], like: Tensor) -> Tensor:
    """(w, h, w, h) of an image of `size = (h, w)`, to normalise boxes."""
    h, w = size
    return like.new_tensor([w, h, w, h])


def matching_cost(
    logits: Tensor,
    boxes: Tensor,
    target: SetTargets,
    size: tuple[int, int],
    config: SparseRCNNConfig,
) -> Tensor:
    """Cost [Q, G] of assigning each query (`logits [Q, C]`, `boxes [Q, 4]`) to each target:
    class_cost x focal cost + l1_cost x L1 of size-normalised boxes + giou_cost x (-GIoU)."""
    scale = image_scale(size, boxes)
    cls = pairwise_class_focal_cost(
        logits.float(), target.classes, config.focal_alpha, config.focal_gamma
    )
    l1 = torch.cdist(boxes.float() / scale, target.boxes.float() / scale, p=1)
    giou = generalized_box_iou(boxes.float(), target.boxes.float())
    return config.class_cost * cls + config.l1_cost * l1 - config.giou_cost * giou


def match(
    logits: Tensor,
    boxes: Tensor,
    target: SetTargets | None,
    size: tuple[int, int],
    config: SparseRCNNConfig,
) -> tuple[Tensor, Tensor]:
    """Hungarian matching of one image's queries to its targets: (query rows, target cols)."""
    if target is None or len(target.boxes) == 0:
        empty = torch.empty(0, dtype=torch.long, device=logits.device)
        return empty, empty.clone()
    with torch.no_grad():
        cost = matching_cost(logits.detach(), boxes.detach(), target, size, config)
    return hungarian_match(cost)


def apply_deltas(
    deltas: Tensor,
    boxes: Tensor,
    weights: tuple[float, float, float, float] = (2.0, 2.0, 1.0, 1.0),
    clamp: float = SCALE_CLAMP,
) -> Tensor:
    """Boxes [N, 4] moved by (dx, dy, dw, dh) deltas [N, 4]: centre += d / w_xy * size, size *=
    exp(min(d / w_wh, clamp)) (the R-CNN parameterisation with Sparse R-CNN's weights)."""
    return decode_boxes(deltas, boxes, weights, clamp)


def _linear_ln_relu(in_dim: int, out_dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(in_dim, out_dim, bias=False), nn.LayerNorm(out_dim), nn.ReLU())


class DynamicConv(nn.Module):
    """Instance interaction: each proposal feature generates the parameters of two 1x1 convs
    (roi channels -> dynamic_dim -> hidden) applied to its own pooled RoI feature.

    forward(features [N, D], rois [N, S, C]) -> [N, D] (S = resolution^2 pooled positions; the
    reference has C = D = 256).
    """

    def __init__(
        self, hidden_dim: int, dynamic_dim: int, resolution: int, roi_channels: int | None = None
    ) -> None:
        super().__init__()
        self.hidden_dim = hidden_dim
        self.dynamic_dim = dynamic_dim
        self.roi_channels = roi_channels or hidden_dim
        self.params = nn.Linear(hidden_dim, (self.roi_channels + hidden_dim) * dynamic_dim)
        self.norm1 = nn.LayerNorm(dynamic_dim)
        self.norm2 = nn.LayerNorm(hidden_dim)
        self.out = nn.Linear(hidden_dim * resolution * resolution, hidden_dim)
        self.norm3 = nn.LayerNorm(hidden_dim)

    def generated(self, features: Tensor) -> tuple[Tensor, Tensor]:
        """The two generated parameter sets: [N, C, dynamic_dim] and [N, dynamic_dim, D]."""
        n, c, k, d = features.shape[0], self.roi_channels, self.dynamic_dim, self.hidden_dim
        params = self.params(features)
        return params[:, : c * k].view(n, c, k), params[:, c * k :].view(n, k, d)

    def forward(self, features: Tensor, rois: Tensor) -> Tensor:
        """Dynamic convs, then flatten + linear to hidden (see class docstring)."""
        first, second = self.generated(features)
        x = F.relu(self.norm1(torch.bmm(rois, first)))
        x = F.relu(self.norm2(torch.bmm(x, second)))
        return F.relu(self.norm3(self.out(x.flatten(1))))


class SparseRCNNStage(nn.Module):
    """One refinement stage: self-attention, dynamic interaction, FFN, class and box heads."""

    def __init__(self, channels: int, num_classes: int, config: SparseRCNNConfig) -> None:
        super().__init__()
        d = config.hidden_dim
        self.config = config
        self.pooler = MultiScaleRoIAlign(
            config.pooler_resolution, config.sampling_ratio, aligned=True
        )
        self.attention = nn.MultiheadAttention(
            d, config.num_heads, dropout=config.dropout, batch_first=True
        )
        self.norm1 = nn.LayerNorm(d)
        self.interaction = DynamicConv(d, config.dynamic_dim, config.pooler_resolution, channels)
        self.norm2 = nn.LayerNorm(d)
        self.ffn = nn.Sequential(
            nn.Linear(d, config.ffn_dim),
            nn.ReLU(),
            nn.Dropout(config.dropout),
            nn.Linear(config.ffn_dim, d),
        )
        self.norm3 = nn.LayerNorm(d)
        self.dropout = nn.Dropout(config.dropout)
        self.cls_tower = nn.Sequential(
            *(_linear_ln_relu(d, d) for _ in range(config.num_cls_layers))
        )
        self.reg_tower = nn.Sequential(
            *(_linear_ln_relu(d, d) for _ in range(config.num_reg_layers))
        )
        self.class_logits = nn.Linear(d, num_classes)
        self.box_deltas = nn.Linear(d, 4)
        self._reset_parameters()

    def _reset_parameters(self) -> None:
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)
        prior = self.config.prior_prob
        nn.init.constant_(self.class_logits.bias, -math.log((1 - prior) / prior))

    def forward(
        self, maps: list[Tensor], boxes: Tensor, features: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        """boxes [B, Q, 4] and proposal features [B, Q, D] -> (logits [B, Q, C], refined boxes
        [B, Q, 4], updated features [B, Q, D])."""
        b, q, d = features.shape
        pooled = self.pooler(maps, self.config.pooler_strides, list(boxes))
        pooled = pooled.flatten(2).transpose(1, 2)  # [B*Q, S, C]
        attended = self.attention(features, features, features, need_weights=False)[0]
        x = self.norm1(features + self.dropout(attended)).reshape(b * q, d)
        x = self.norm2(x + self.dropout(self.interaction(x, pooled)))
        x = self.norm3(x + self.dropout(self.ffn(x)))
        logits = self.class_logits(self.cls_tower(x))
        deltas = self.box_deltas(self.reg_tower(x)).float()
        cfg = self.config
        refined = apply_deltas(deltas, boxes.reshape(b * q, 4), cfg.box_weights, cfg.scale_clamp)
        return logits.view(b, q, -1), refined.view(b, q, 4), x.view(b, q, d)


def top_detections(
    logits: Tensor, boxes: Tensor, size: tuple[int, int], k: int
) -> tuple[Tensor, Tensor, Tensor]:
    """Top-k of sigmoid scores over proposals x classes of one image (no NMS): (boxes clipped to
    the image, scores, classes)."""
    num_classes = logits.shape[-1]
    scores = logits.float().sigmoid().flatten()
    top, index = scores.topk(min(k, scores.numel()))
    return clip_boxes(boxes[index // num_classes], size), top, index % num_classes


class SparseRCNN(nn.Module):
    """Learnable proposals + `num_stages` dynamic heads; `forward(features, batch)`.

    With `batch` (training) the final stage is matched to the ground truth to fill the object
    stream's RoIs; without, the detections are the final stage's top-k.
    """

    needs = (PIXEL,)
    provides = (OBJECTS,)

    def __init__(
        self, spec: FeatureSpec, num_classes: int, config: SparseRCNNConfig | None = None
    ) -> None:
        super().__init__()
        self.config = config or SparseRCNNConfig()
        self.num_classes = num_classes
        cfg = self.config
        self.proposal_boxes = nn.Embedding(cfg.num_proposals, 4)
        nn.init.constant_(self.proposal_boxes.weight[:, :2], 0.5)
        nn.init.constant_(self.proposal_boxes.weight[:, 2:], 1.0)
        self.proposal_features = nn.Embedding(cfg.num_proposals, cfg.hidden_dim)
        self.stages = nn.ModuleList(
            SparseRCNNStage(spec.pixel_channels, num_classes, cfg) for _ in range(cfg.num_stages)
        )

    def initial_boxes(self, image_sizes: list[tuple[int, int]]) -> Tensor:
        """The proposal boxes [B, Q, 4] scaled from normalised cx cy w h to each image's size."""
        weight = self.proposal_boxes.weight
        scale = torch.stack([image_scale(s, weight) for s in image_sizes])
        return box_cxcywh_to_xyxy(weight)[None] * scale[:, None]

    def forward(self, features: Features, batch: Batch | None = None) -> SparseRCNNOutputs:
        """Every stage's class logits and boxes; sets `features.objects` (see class docstring)."""
        maps = features.levels(self.config.pooler_strides)
        sizes = list(features.image_sizes)
        boxes = self.initial_boxes(sizes)
        queries = self.proposal_features.weight[None].repeat(len(sizes), 1, 1)
        outputs = SparseRCNNOutputs([], [], sizes)
        for stage in self.stages:
            logits, refined, queries = stage(maps, boxes, queries)
            outputs.stage_logits.append(logits)
            outputs.stage_boxes.append(refined)
            boxes = refined.detach()
        if batch is not None:
            features.objects = self.training_objects(outputs, batch)
        else:
            features.objects = self.detections(outputs)
        return outputs

    def training_objects(self, outputs: SparseRCNNOutputs, batch: Batch) -> ObjectFeatures:
        """Object stream for training: final boxes with their matched ground truth."""
        logits, boxes = outputs.stage_logits[-1], outputs.stage_boxes[-1].detach()
        targets = set_targets(batch, boxes.device, self.num_classes)
        rois, labels, gt_index = [], [], []
        for i, target in enumerate(targets):
            rows, cols = match(logits[i], boxes[i], target, outputs.image_sizes[i], self.config)
            label = torch.full((len(boxes[i]),), self.num_classes, dtype=torch.long,
                               device=boxes.device)  # fmt: skip
            index = torch.full_like(label, -1)
            if target is not None and len(rows):
                label[rows] = target.classes[cols].long()
                index[rows] = target.index[cols]
            rois.append(boxes[i])
            labels.append(label)
            gt_index.append(index)
        return ObjectFeatures(proposals=rois, rois=rois, roi_labels=labels, roi_gt_index=gt_index)

    def detections(self, outputs: SparseRCNNOutputs) -> ObjectFeatures:
        """Fill the inference outputs (top-k, no NMS) and return the object stream."""
        logits, boxes = outputs.stage_logits[-1], outputs.stage_boxes[-1]
        k = self.config.detections_per_image
        found = [
            top_detections(logits[i], boxes[i], size, k)
            for i, size in enumerate(outputs.image_sizes)
        ]
        outputs.boxes = [f[0] for f in found]
        outputs.scores = [f[1] for f in found]
        outputs.classes = [f[2] for f in found]
        return ObjectFeatures(
            proposals=[b.detach() for b in boxes],
            detections=outputs.boxes,
            det_classes=outputs.classes,
            det_scores=outputs.scores,
        )
