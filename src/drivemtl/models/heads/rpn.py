"""Region Proposal Network (Ren et al. 2015) on FPN levels P2..P6: head, proposals, loss.

One 3x3 conv + ReLU shared by all levels, then 1x1 convs for objectness (A per location) and box
deltas (4A). Proposals: per level the top-k scores, decoded and clipped, small boxes removed, then
NMS per level and the best `post_nms_topk` per image. The box regression loss is smooth-L1
(Detectron2 / torchvision, the default) or plain L1 (`reg_loss: l1`, what VTDNet uses).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict
from torch import Tensor, nn

from drivemtl.models.heads.anchors import AnchorGenerator, match_boxes, sample_matches
from drivemtl.ops.boxes import clip_boxes, decode_boxes, encode_boxes
from drivemtl.ops.nms import batched_nms

RegressionLoss = Literal["smooth_l1", "l1"]


def regression_loss(
    pred: Tensor, target: Tensor, kind: RegressionLoss, beta: float = 1.0 / 9
) -> Tensor:
    """Summed box regression loss: smooth-L1 with `beta` (quadratic below it) or plain L1."""
    target = target.to(pred.dtype)
    if kind == "l1":
        return F.l1_loss(pred, target, reduction="sum")
    if kind == "smooth_l1":
        return F.smooth_l1_loss(pred, target, beta=beta, reduction="sum")
    raise ValueError(f"box regression loss {kind!r}: expected 'smooth_l1' or 'l1'")


class RPNConfig(BaseModel):
    """RPN hyper-parameters (Mask R-CNN / FPN defaults)."""

    model_config = ConfigDict(extra="forbid")

    anchor_sizes: tuple[float, ...] = (32, 64, 128, 256, 512)
    aspect_ratios: tuple[float, ...] = (0.5, 1.0, 2.0)
    pre_nms_topk_train: int = 2000
    pre_nms_topk_test: int = 1000
    post_nms_topk_train: int = 1000
    post_nms_topk_test: int = 1000
    nms_threshold: float = 0.7
    min_size: float = 1e-3
    fg_iou: float = 0.7
    bg_iou: float = 0.3
    batch_size_per_image: int = 256
    positive_fraction: float = 0.5
    reg_loss: RegressionLoss = "smooth_l1"
    smooth_l1_beta: float = 1.0 / 9


@dataclass
class RPNOutputs:
    """Raw RPN outputs: per level anchors [N_l, 4], objectness [B, N_l], deltas [B, N_l, 4]."""

    anchors: list[Tensor]
    objectness: list[Tensor]
    deltas: list[Tensor]
    proposals: list[Tensor]
    proposal_scores: list[Tensor]


class RPN(nn.Module):
    """Anchor-based proposal network over the given pixel feature maps (see module docstring)."""

    def __init__(self, channels: int, strides: tuple[int, ...], config: RPNConfig) -> None:
        super().__init__()
        self.config = config
        self.anchor_generator = AnchorGenerator(config.anchor_sizes, config.aspect_ratios, strides)
        anchors = self.anchor_generator.num_anchors
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)
        self.objectness = nn.Conv2d(channels, anchors, 1)
        self.box_deltas = nn.Conv2d(channels, 4 * anchors, 1)
        for layer in (self.conv, self.objectness, self.box_deltas):
            nn.init.normal_(layer.weight, std=0.01)
            nn.init.zeros_(layer.bias)

    def forward(
        self, maps: list[Tensor], image_sizes: list[tuple[int, int]], training: bool
    ) -> RPNOutputs:
        """Scores and deltas for every anchor, plus the proposals of each image (detached)."""
        objectness, deltas = self.head(maps)
        return self.finish(objectness, deltas, image_sizes, training)

    def head(self, maps: list[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        """The convolutional part (what an exported graph holds): per level objectness maps
        [B, A, H, W] and delta maps [B, 4A, H, W]."""
        objectness, deltas = [], []
        for x in maps:
            h = F.relu(self.conv(x))
            objectness.append(self.objectness(h))
            deltas.append(self.box_deltas(h))
        return objectness, deltas

    def finish(
        self,
        objectness_maps: list[Tensor],
        delta_maps: list[Tensor],
        image_sizes: list[tuple[int, int]],
        training: bool,
    ) -> RPNOutputs:
        """The data-dependent part after `head`: flattened scores / deltas, anchors, proposals
        (top-k, decoding, NMS), shared by the PyTorch forward and the exported runtime."""
        objectness, deltas = [], []
        for obj, dlt in zip(objectness_maps, delta_maps, strict=True):
            b, _, height, width = obj.shape
            objectness.append(obj.permute(0, 2, 3, 1).reshape(b, -1))
            d = dlt.view(b, -1, 4, height, width)
            deltas.append(d.permute(0, 3, 4, 1, 2).reshape(b, -1, 4))
        sizes = [tuple(x.shape[-2:]) for x in objectness_maps]
        anchors = self.anchor_generator(sizes, objectness_maps[0].device)
        proposals, scores = self.propose(anchors, objectness, deltas, image_sizes, training)
        return RPNOutputs(anchors, objectness, deltas, proposals, scores)

    @torch.no_grad()
    def propose(
        self,
        anchors: list[Tensor],
        objectness: list[Tensor],
        deltas: list[Tensor],
        image_sizes: list[tuple[int, int]],
        training: bool,
    ) -> tuple[list[Tensor], list[Tensor]]:
        """Per image: the top proposals [K, 4] and their objectness logits [K]."""
        cfg = self.config
        pre_k = cfg.pre_nms_topk_train if training else cfg.pre_nms_topk_test
        post_k = cfg.post_nms_topk_train if training else cfg.post_nms_topk_test
        proposals, scores = [], []
        for i, size in enumerate(image_sizes):
            boxes_i, scores_i, levels_i = [], [], []
            for level, (anc, obj, dlt) in enumerate(zip(anchors, objectness, deltas, strict=True)):
                k = min(pre_k, obj.shape[1])
                top_scores, top = obj[i].detach().topk(k)
                boxes = clip_boxes(decode_boxes(dlt[i, top].detach().float(), anc[top]), size)
                boxes_i.append(boxes)
                scores_i.append(top_scores.float())
                levels_i.append(torch.full((k,), level, dtype=torch.int64, device=boxes.device))
            boxes = torch.cat(boxes_i)
            score = torch.cat(scores_i)
            level = torch.cat(levels_i)
            wh = boxes[:, 2:] - boxes[:, :2]
            keep = (wh > cfg.min_size).all(dim=1) & torch.isfinite(score)
            boxes, score, level = boxes[keep], score[keep], level[keep]
            keep = batched_nms(boxes, score, level, cfg.nms_threshold)[:post_k]
            proposals.append(boxes[keep])
            scores.append(score[keep])
        return proposals, scores


def rpn_loss(
    outputs: RPNOutputs,
    gt_boxes: list[Tensor | None],
    gt_ignore: list[Tensor | None],
    config: RPNConfig,
    images: list[int],
) -> tuple[Tensor, Tensor]:
    """(objectness BCE, box regression) over sampled anchors of `images` (batch indices).

    The regression is `config.reg_loss` (smooth-L1 or L1) of the positive anchors' deltas; both
    terms are normalised by the number of sampled anchors, as in Detectron2 / torchvision.
    """
    anchors = torch.cat(outputs.anchors)
    objectness = torch.cat(outputs.objectness, dim=1)
    deltas = torch.cat(outputs.deltas, dim=1)
    obj_terms, obj_targets, reg_pred, reg_target = [], [], [], []
    for i in images:
        boxes = gt_boxes[i]
        if boxes is None:
            boxes = anchors.new_zeros((0, 4))
        matched = match_boxes(
            anchors, boxes.to(anchors), config.fg_iou, config.bg_iou, True, gt_ignore[i]
        )
        pos, neg = sample_matches(matched, config.batch_size_per_image, config.positive_fraction)
        index = torch.cat((pos, neg))
        obj_terms.append(objectness[i, index])
        obj_targets.append(torch.cat((torch.ones_like(pos), torch.zeros_like(neg))).float())
        reg_pred.append(deltas[i, pos])
        reg_target.append(encode_boxes(boxes.to(anchors)[matched[pos]], anchors[pos]))
    logits = torch.cat(obj_terms)
    total = max(logits.numel(), 1)
    cls_loss = F.binary_cross_entropy_with_logits(
        logits, torch.cat(obj_targets).to(logits.dtype), reduction="sum"
    )
    reg = regression_loss(
        torch.cat(reg_pred), torch.cat(reg_target), config.reg_loss, config.smooth_l1_beta
    )
    return cls_loss / total, reg / total
