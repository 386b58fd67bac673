"""Pose task: overfitting, heatmap targets, keypoint decoding with flips."""

from __future__ import annotations

import torch
from batches import make_batch, overfit

from drivemtl.models.config import TaskConfig
from drivemtl.models.heads.mask_head import RoIHeadOutputs
from drivemtl.structures.bdd import POSE_FLIP_PAIRS, POSE_JOINTS
from drivemtl.tasks.pose import PoseTask


def test_overfits_tiny_batch() -> None:
    first, last = overfit("pose", steps=40, lr=1e-2)
    assert last <= 0.2 * first


def test_loss_is_zero_for_perfect_heatmaps() -> None:
    from drivemtl.models.heads.keypoint_head import keypoint_targets

    batch = make_batch(1, ("pose",))
    box = batch.instances[0].boxes[:1]
    targets, valid = keypoint_targets(batch.instances[0].keypoints[:1], box, 56, 2.0)
    assert bool(valid.all())
    outputs = RoIHeadOutputs(targets, [box], [torch.tensor([0])], gt_index=[torch.tensor([0])])
    assert float(PoseTask().loss(outputs, batch)) < 1e-10
    outputs.logits = torch.zeros_like(targets)
    expected = (targets**2).sum(dim=(-2, -1)).mean()  # summed per heatmap, mean over joints
    assert torch.isclose(PoseTask().loss(outputs, batch), expected)


def test_postprocess_decodes_peaks_and_unflips_joints() -> None:
    batch = make_batch(1, ("pose",))
    heatmaps = torch.zeros(1, len(POSE_JOINTS), 56, 56)
    heatmaps[0, :, 10, 20] = 0.7  # every joint at heatmap pixel (x=20, y=10)
    left, right = POSE_FLIP_PAIRS[0]
    heatmaps[0, left] = 0.0
    heatmaps[0, left, 30, 40] = 0.9
    box = torch.tensor([[0.0, 0.0, 56.0, 28.0]])  # heatmap pixel = 1 x 0.5 image pixels
    outputs = RoIHeadOutputs(heatmaps, [box], [torch.tensor([0])], scores=[torch.tensor([0.6])])
    (pred,) = PoseTask().postprocess(outputs, batch)
    kp = pred.poses.keypoints[0]
    assert torch.allclose(kp[right], torch.tensor([20.5, 5.25, 0.7]))
    assert torch.allclose(kp[left], torch.tensor([40.5, 15.25, 0.9]))
    batch.metas[0].flipped = True
    (flipped,) = PoseTask().postprocess(outputs, batch)
    kp = flipped.poses.keypoints[0]
    # x -> 96 - x and the left / right joints swap places
    assert torch.allclose(kp[right], torch.tensor([96 - 40.5, 15.25, 0.9]))
    assert torch.allclose(kp[left], torch.tensor([96 - 20.5, 5.25, 0.7]))


def test_softmax_ce_loss_matches_a_float64_reference() -> None:
    from drivemtl.models.heads.keypoint_head import keypoint_targets

    batch = make_batch(1, ("pose",))
    box = batch.instances[0].boxes[:1]
    targets, valid = keypoint_targets(batch.instances[0].keypoints[:1], box, 56, 2.0)
    torch.manual_seed(0)
    logits = torch.randn_like(targets)
    outputs = RoIHeadOutputs(logits, [box], [torch.tensor([0])], gt_index=[torch.tensor([0])])
    task = PoseTask(TaskConfig(head={"loss": "softmax_ce"}))
    got = task.loss(outputs, batch)
    ref = []
    for j in range(targets.shape[1]):
        if not valid[0, j]:
            continue
        t = targets[0, j].double().flatten()
        t = t / t.sum()
        logp = torch.log_softmax(logits[0, j].double().flatten(), dim=0)
        ref.append(float(-(t * logp).sum()))
    assert abs(float(got) - sum(ref) / len(ref)) < 1e-5
    # Predicting the target distribution itself (CE = its entropy) beats a flat map (log 56^2).
    sharp = RoIHeadOutputs(
        torch.log(targets.clamp(min=1e-12)),
        [box],
        [torch.tensor([0])],
        gt_index=[torch.tensor([0])],
    )
    flat = RoIHeadOutputs(
        torch.zeros_like(targets), [box], [torch.tensor([0])], gt_index=[torch.tensor([0])]
    )
    assert float(task.loss(sharp, batch)) < float(task.loss(flat, batch))
