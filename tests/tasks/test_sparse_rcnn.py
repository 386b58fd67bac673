"""Sparse R-CNN family: criterion against a float64 reference, labelled-image masking, the
object stream for the RoI heads, export refusal, and overfitting to AP 100 on two frames."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from batches import make_batch

from drivemtl.evaluation.coco import DetectionEvaluator
from drivemtl.export.errors import ExportError
from drivemtl.export.graphs import plan_export
from drivemtl.models import build_model
from drivemtl.models.config import ModelConfig, TaskConfig
from drivemtl.models.heads.sparse_rcnn import SparseRCNNOutputs
from drivemtl.structures.bdd import THING_CLASSES
from drivemtl.tasks.detection import DetectionTask

TINY = {"type": "sparse_rcnn", "hidden_dim": 32, "num_stages": 2, "num_proposals": 20,
        "ffn_dim": 64, "dynamic_dim": 8, "num_heads": 4}  # fmt: skip


def _config(tasks: dict[str, dict]) -> ModelConfig:
    return ModelConfig(
        backbone={"type": "resnet18", "width": 8, "norm": "gn"},
        neck={"type": "fpn", "out_channels": 16, "norm": "gn"},
        tasks={name: TaskConfig(head=head) for name, head in tasks.items()},
    )


def _outputs(batch, queries: int = 3, stages: int = 2, seed: int = 0) -> SparseRCNNOutputs:
    """Random logits and well-formed boxes inside each image, requiring grad."""
    g = torch.Generator().manual_seed(seed)
    n, classes = len(batch), 8
    logits, boxes = [], []
    for _ in range(stages):
        logits.append(torch.randn(n, queries, classes, generator=g).requires_grad_())
        corner = torch.rand(n, queries, 2, generator=g) * torch.tensor([60.0, 40.0])
        size = 4 + torch.rand(n, queries, 2, generator=g) * 30
        boxes.append(torch.cat((corner, corner + size), -1).requires_grad_())
    return SparseRCNNOutputs(logits, boxes, list(batch.image_sizes))


def _giou64(a: list[float], b: list[float]) -> float:
    inter = max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(
        0.0, min(a[3], b[3]) - max(a[1], b[1])
    )
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    hull = (max(a[2], b[2]) - min(a[0], b[0])) * (max(a[3], b[3]) - min(a[1], b[1]))
    return inter / union - (hull - union) / hull


def _focal64(x: float, t: float) -> float:
    p = 1 / (1 + math.exp(-x))
    ce = -(t * math.log(p) + (1 - t) * math.log(1 - p))
    p_t = p * t + (1 - p) * (1 - t)
    return (0.25 * t + 0.75 * (1 - t)) * ce * (1 - p_t) ** 2


def _reference_loss(outputs: SparseRCNNOutputs, batch, images: list[int]) -> float:
    """Float64 loss with brute-force matching (every injective query assignment)."""
    total, num_boxes = 0.0, 0
    for i in images:
        inst = batch.instances[i]
        keep = [k for k in range(len(inst)) if inst.ignore is None or not bool(inst.ignore[k])]
        num_boxes += len(keep)
    h_w = [(float(w), float(h)) for h, w in batch.image_sizes]
    for logits_s, boxes_s in zip(outputs.stage_logits, outputs.stage_boxes, strict=True):
        for i in images:
            inst = batch.instances[i]
            keep = [k for k in range(len(inst)) if inst.ignore is None or not bool(inst.ignore[k])]
            logit = logits_s[i].detach().double().tolist()
            box = boxes_s[i].detach().double().tolist()
            gt = [inst.boxes[k].double().tolist() for k in keep]
            cls = [int(inst.classes[k]) for k in keep]
            w, h = h_w[i]
            scale = [w, h, w, h]

            def terms(q: int, g: int, box=box, gt=gt, scale=scale) -> tuple[float, float]:
                l1 = sum(abs(box[q][j] - gt[g][j]) / scale[j] for j in range(4))
                return l1, _giou64(box[q], gt[g])

            def cost(q: int, g: int, logit=logit, cls=cls, terms=terms) -> float:
                p = 1 / (1 + math.exp(-logit[q][cls[g]]))
                focal = 0.25 * (1 - p) ** 2 * -math.log(p + 1e-8)
                focal -= 0.75 * p**2 * -math.log(1 - p + 1e-8)
                l1, giou = terms(q, g)
                return 2 * focal + 5 * l1 - 2 * giou

            best = min(
                itertools.permutations(range(len(box)), len(gt)),
                key=lambda qs: sum(cost(q, g) for g, q in enumerate(qs)),
            )
            onehot = [[0.0] * len(logit[0]) for _ in logit]
            for g, q in enumerate(best):
                onehot[q][cls[g]] = 1.0
                l1, giou = terms(q, g)
                total += 5 * l1 + 2 * (1 - giou)
            total += 2 * sum(
                _focal64(x, t)
                for row, trow in zip(logit, onehot, strict=True)
                for x, t in zip(row, trow, strict=True)
            )
    return total / max(num_boxes, 1)


def test_loss_equals_float64_reference_with_ignored_boxes_dropped() -> None:
    batch = make_batch(2, ("detection",))
    batch.instances[1].ignore = torch.tensor([False, True])
    outputs = _outputs(batch)
    loss = DetectionTask(TaskConfig(head=TINY)).loss(outputs, batch)
    assert float(loss.detach()) == pytest.approx(_reference_loss(outputs, batch, [0, 1]), rel=1e-5)
    loss.backward()
    assert all(bool(b.grad.abs().sum() > 0) for b in outputs.stage_boxes)


def test_only_the_last_stage_without_deep_supervision() -> None:
    batch = make_batch(2, ("detection",))
    outputs = _outputs(batch)
    task = DetectionTask(TaskConfig(head={**TINY, "deep_supervision": False}))
    last = SparseRCNNOutputs(outputs.stage_logits[-1:], outputs.stage_boxes[-1:],
                             outputs.image_sizes)  # fmt: skip
    expected = _reference_loss(last, batch, [0, 1])
    assert float(task.loss(outputs, batch).detach()) == pytest.approx(expected, rel=1e-5)


def test_an_unlabelled_image_contributes_exactly_zero() -> None:
    batch = make_batch(2, ("detection",), labeled=[True, False])
    task = DetectionTask(TaskConfig(head=TINY))
    outputs = _outputs(batch, seed=0)
    other = _outputs(batch, seed=1)
    for s in range(2):  # image 0 the same, image 1 different
        other.stage_logits[s].data[0] = outputs.stage_logits[s].data[0]
        other.stage_boxes[s].data[0] = outputs.stage_boxes[s].data[0]
    loss = task.loss(outputs, batch)
    assert torch.equal(loss, task.loss(other, batch))
    assert float(loss.detach()) == pytest.approx(_reference_loss(outputs, batch, [0]), rel=1e-5)
    loss.backward()
    for logits, boxes in zip(outputs.stage_logits, outputs.stage_boxes, strict=True):
        assert float(logits.grad[1].abs().sum()) == 0.0 and float(boxes.grad[1].abs().sum()) == 0.0
    none = make_batch(2, ("detection",), labeled=[False, False])
    zero = task.loss(None, none)  # outputs are not even looked at
    assert float(zero) == 0.0 and not zero.requires_grad


def test_mask_and_pose_heads_train_and_predict_on_the_sparse_rcnn_object_stream() -> None:
    torch.manual_seed(0)
    roi = {"channels": 16, "num_convs": 2}
    model = build_model(_config({"detection": TINY, "instance": roi, "pose": roi}))
    batch = make_batch(2, ("detection", "instance", "pose"))
    model.train()
    losses = model.losses(batch)
    assert set(losses) == {"detection", "instance", "pose"}
    assert all(bool(torch.isfinite(v)) and float(v.detach()) > 0 for v in losses.values())
    sum(losses.values()).backward()
    for task in ("instance", "pose"):
        grads = [p.grad for n, p in model.named_parameters() if n.startswith(f"heads.{task}.")]
        assert any(g is not None and bool(g.abs().sum() > 0) for g in grads), task
    model.eval()
    with torch.no_grad():
        pred = model.predict(batch)[0]
    assert len(pred.detections) == 100
    assert pred.instances is not None and len(pred.instances) > 0
    assert pred.instances.masks is not None and pred.poses is not None and len(pred.poses) > 0


def test_export_refuses_the_head_naming_it() -> None:
    model = build_model(_config({"detection": TINY}))
    with pytest.raises(ExportError, match=r"model\.tasks\.detection head \(SparseRCNN\) cannot be "
                       r"exported: it provides the object stream"):  # fmt: skip
        plan_export(model)


def _ap(model, batch) -> float:
    model.eval()
    with torch.no_grad():
        predictions = model.predict(batch)
    model.train()
    evaluator = DetectionEvaluator(THING_CLASSES)
    evaluator.update(predictions, batch)
    return evaluator.compute()["AP"]


def test_overfits_two_frames_to_full_ap() -> None:
    """Two frames with two objects each: COCO AP (IoU .5:.95) reaches ~100 in 200 steps.

    Few detections per image, so that AP needs the right classes on top (with every proposal x
    class pair kept, a right box scored low for the right class would still rank first).
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        model = build_model(_config({"detection": {**TINY, "detections_per_image": 4}}))
        batch = make_batch(2, ("detection",))
        assert _ap(model, batch) < 5.0
        steps = 200
        optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
        schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, 3e-3, total_steps=steps,
                                                       pct_start=0.1)  # fmt: skip
        for _ in range(steps):
            loss = model.losses(batch)["detection"]
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
        assert _ap(model, batch) >= 90.0
    finally:
        torch.set_num_threads(threads)
