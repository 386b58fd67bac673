"""Sparse R-CNN head: dynamic conv, box deltas, matching cost, object stream, MACs."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from batches import tiny_config

from drivemtl.models import build_model
from drivemtl.models.config import TaskConfig
from drivemtl.models.features import Features, FeatureSpec
from drivemtl.models.heads.sparse_rcnn import (
    DynamicConv,
    SetTargets,
    SparseRCNN,
    SparseRCNNConfig,
    apply_deltas,
    match,
    matching_cost,
    top_detections,
)
from drivemtl.models.summary import summarize
from drivemtl.structures import Instances, Sample, SampleMeta, collate

TINY = {"hidden_dim": 16, "num_stages": 2, "num_proposals": 6, "ffn_dim": 32,
        "dynamic_dim": 4, "num_heads": 2}  # fmt: skip


def test_dynamic_conv_equals_explicit_products_of_generated_parameters() -> None:
    torch.manual_seed(0)
    n, c, k, d, res = 3, 5, 2, 4, 2
    conv = DynamicConv(d, k, res, roi_channels=c).double()
    features = torch.randn(n, d, dtype=torch.float64)
    rois = torch.randn(n, res * res, c, dtype=torch.float64)
    params = features @ conv.params.weight.T + conv.params.bias
    expected = []
    for i in range(n):
        first = params[i, : c * k].reshape(c, k)
        second = params[i, c * k :].reshape(k, d)
        x = F.relu(F.layer_norm(rois[i] @ first, (k,), conv.norm1.weight, conv.norm1.bias))
        x = F.relu(F.layer_norm(x @ second, (d,), conv.norm2.weight, conv.norm2.bias))
        x = x.reshape(-1) @ conv.out.weight.T + conv.out.bias
        expected.append(F.relu(F.layer_norm(x, (d,), conv.norm3.weight, conv.norm3.bias)))
    assert torch.allclose(conv(features, rois), torch.stack(expected), atol=1e-12)


def test_apply_deltas_by_hand() -> None:
    box = torch.tensor([[10.0, 20.0, 30.0, 60.0]])  # centre (20, 40), size 20 x 40
    # weights (2, 2, 1, 1): dx = 2 / 2 -> +1 width, dy = -2 / 2 -> -1 height, w doubles
    moved = apply_deltas(torch.tensor([[2.0, -2.0, math.log(2.0), 0.0]]), box)
    assert torch.allclose(moved, torch.tensor([[20.0, -20.0, 60.0, 20.0]]))
    huge = apply_deltas(torch.tensor([[0.0, 0.0, 100.0, 0.0]]), box)  # dw clamped
    width = 20.0 * 100000.0 / 16
    assert torch.allclose(huge, torch.tensor([[20.0 - width / 2, 20.0, 20.0 + width / 2, 60.0]]))


def _giou64(a: list[float], b: list[float]) -> float:
    inter_w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    inter_h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = inter_w * inter_h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    hull = (max(a[2], b[2]) - min(a[0], b[0])) * (max(a[3], b[3]) - min(a[1], b[1]))
    return inter / union - (hull - union) / hull


def test_matching_cost_equals_float64_reference_and_recovers_the_permutation() -> None:
    size = (50, 100)  # h, w
    gt = torch.tensor([[0.0, 0.0, 20.0, 20.0], [40.0, 10.0, 90.0, 40.0], [10.0, 30.0, 30.0, 50.0]])
    gt_classes = torch.tensor([1, 0, 2])
    assign = (1, 3, 0)  # target g is predicted by query assign[g]; query 2 is spare
    boxes = torch.tensor([[60.0, 0.0, 70.0, 10.0]]).repeat(4, 1)
    logits = torch.full((4, 3), -3.0)
    for g, q in enumerate(assign):
        boxes[q] = gt[g] + torch.tensor([1.0, -1.0, 2.0, 1.0])
        logits[q, gt_classes[g]] = 2.0
    target = SetTargets(gt, gt_classes, torch.arange(3))
    config = SparseRCNNConfig()
    cost = matching_cost(logits, boxes, target, size, config)
    ref = torch.zeros(4, 3, dtype=torch.float64)
    scale = [100.0, 50.0, 100.0, 50.0]
    for q in range(4):
        for g in range(3):
            p = 1 / (1 + math.exp(-float(logits[q, gt_classes[g]])))
            pos = 0.25 * (1 - p) ** 2 * -math.log(p + 1e-8)
            neg = 0.75 * p**2 * -math.log(1 - p + 1e-8)
            l1 = sum(abs(float(boxes[q, j] - gt[g, j])) / scale[j] for j in range(4))
            giou = _giou64(boxes[q].tolist(), gt[g].tolist())
            ref[q, g] = 2.0 * (pos - neg) + 5.0 * l1 - 2.0 * giou
    assert torch.allclose(cost.double(), ref, atol=1e-5)
    rows, cols = match(logits, boxes, target, size, config)
    assert rows.tolist() == [0, 1, 3] and cols.tolist() == [2, 0, 1]


def test_top_detections_are_the_best_query_class_pairs_clipped() -> None:
    logits = torch.tensor([[0.0, 3.0], [2.0, -1.0], [-5.0, 1.0]])
    boxes = torch.tensor([[-5.0, 0.0, 10.0, 10.0], [0.0, 0.0, 4.0, 4.0], [1.0, 1.0, 90.0, 9.0]])
    det, scores, classes = top_detections(logits, boxes, (20, 50), 3)
    assert classes.tolist() == [1, 0, 1]
    assert torch.allclose(scores, torch.tensor([3.0, 2.0, 1.0]).sigmoid())
    assert torch.equal(det, torch.tensor([[0.0, 0, 10, 10], [0, 0, 4, 4], [1, 1, 50, 9]]))


def _features(batch, channels: int = 16) -> Features:
    g = torch.Generator().manual_seed(0)
    h, w = batch.images.shape[-2:]
    strides = (4, 8, 16, 32)
    pixel = [torch.randn(len(batch), channels, h // s, w // s, generator=g) for s in strides]
    return Features(image=pixel[-1], pixel=pixel, strides=strides, input_size=(h, w),
                    image_sizes=list(batch.image_sizes))  # fmt: skip


def test_initial_boxes_cover_each_image_and_stream_indices_skip_ignored_boxes() -> None:
    torch.manual_seed(0)
    inst = Instances(
        boxes=torch.tensor([[0.0, 0, 30, 30], [10, 10, 40, 60], [50, 20, 90, 60]]),
        classes=torch.tensor([3, 0, 2]),
        ignore=torch.tensor([True, False, False]),
    )
    samples = [
        Sample(image=torch.zeros(3, 64, 96), tasks=frozenset({"detection"}), instances=inst,
               meta=SampleMeta(name="a", image_set="s", orig_size=(64, 96))),
        Sample(image=torch.zeros(3, 64, 64), tasks=frozenset({"detection"}),
               meta=SampleMeta(name="b", image_set="s", orig_size=(64, 64))),
    ]  # fmt: skip
    batch = collate(samples, size_divisor=32)
    head = SparseRCNN(FeatureSpec(16, 16, (4, 8, 16, 32)), 8, SparseRCNNConfig(**TINY))
    initial = head.initial_boxes(batch.image_sizes)
    assert torch.equal(initial[0], torch.tensor([[0.0, 0, 96, 64]]).expand(6, 4))
    assert torch.equal(initial[1], torch.tensor([[0.0, 0, 64, 64]]).expand(6, 4))
    features = _features(batch)
    out = head(features, batch)
    assert len(out.stage_logits) == 2 and out.stage_logits[0].shape == (2, 6, 8)
    objects = features.objects
    gt0 = objects.roi_gt_index[0]
    assert sorted(gt0[gt0 >= 0].tolist()) == [1, 2]  # the ignored box 0 is never a target
    assert torch.equal(objects.roi_labels[0][gt0 >= 0], inst.classes[gt0[gt0 >= 0]])
    assert bool((objects.roi_labels[0][gt0 < 0] == 8).all())
    assert objects.roi_gt_index[1].tolist() == [-1] * 6  # no instances
    assert not objects.rois[0].requires_grad
    assert torch.equal(objects.rois[0], out.stage_boxes[-1][0].detach())
    head.eval()
    features = _features(batch)
    with torch.no_grad():
        out = head(features)
    assert len(out.boxes[0]) == 6 * 8 and len(features.objects.detections[1]) == 6 * 8
    assert float(out.boxes[1][:, 2].max()) <= 64.0


def test_summary_counts_the_head() -> None:
    torch.manual_seed(0)
    cfg = tiny_config(("detection",))
    cfg.tasks["detection"] = TaskConfig(head={"type": "sparse_rcnn", **TINY})
    model = build_model(cfg)
    heads = {c.name: c for c in summarize(model, (64, 96)).heads}
    # at least the dynamic convs: per stage and proposal 49 x (16 x 4 + 4 x 16) MACs
    assert heads["heads.detection"].macs >= 2 * 6 * 49 * (16 * 4 + 4 * 16)
