"""Instance segmentation task: overfitting, loss targets, mask pasting in original pixels."""

from __future__ import annotations

import math

import torch
from batches import make_batch, overfit

from drivemtl.models.heads.mask_head import RoIHeadOutputs
from drivemtl.structures.instances import Instances
from drivemtl.tasks.instance import InstanceTask


def test_overfits_tiny_batch() -> None:
    # 50 steps: at 40 the loss (mask + support detector) reaches 0.203 x its start on torch 2.13,
    # a hair above the bound; by 50 it is at 0.11 x.
    first, last = overfit("instance", steps=50, lr=1e-2)
    assert last <= 0.2 * first


def test_loss_targets_are_the_gt_mask_inside_the_roi() -> None:
    batch = make_batch(1, ("instance",))
    # A 28x28-pixel RoI: each 28x28 mask bin is one image pixel (RoIAlign, aligned=True).
    box = torch.tensor([[10.0, 20.0, 38.0, 48.0]])
    masks = torch.zeros(1, 64, 96, dtype=torch.bool)
    masks[0, 24:34, 14:30] = True
    batch.instances[0] = Instances(box, torch.tensor([2]), masks=masks)
    perfect = torch.full((1, 8, 28, 28), -30.0)
    perfect[0, 2, 4:14, 4:20] = 30.0
    perfect[0, 5] = 30.0  # other classes' channels do not count
    outputs = RoIHeadOutputs(perfect, [box], [torch.tensor([2])], gt_index=[torch.tensor([0])])
    assert float(InstanceTask().loss(outputs, batch)) < 1e-10
    outputs.logits = torch.zeros_like(perfect)
    assert abs(float(InstanceTask().loss(outputs, batch)) - math.log(2)) < 1e-6
    shifted = torch.full((1, 8, 28, 28), -30.0)
    shifted[0, 2, 5:15, 4:20] = 30.0  # one row off: 2 x 16 wrong bins of 784
    outputs.logits = shifted
    assert abs(float(InstanceTask().loss(outputs, batch)) - 30 * 32 / 784) < 1e-4


def test_postprocess_pastes_masks() -> None:
    batch = make_batch(1, ("instance",))
    logits = torch.full((1, 8, 28, 28), -10.0)
    logits[0, 2, :, :14] = 10.0  # left half of the box, class 2 only
    outputs = RoIHeadOutputs(
        logits, [torch.tensor([[10.0, 20.0, 30.0, 40.0]])], [torch.tensor([2])],
        scores=[torch.tensor([0.8])],
    )  # fmt: skip
    (pred,) = InstanceTask().postprocess(outputs, batch)
    masks = pred.instances.masks
    assert masks.shape == (1, 64, 96)
    expected = torch.zeros(64, 96, dtype=torch.bool)
    expected[20:40, 10:20] = True
    assert torch.equal(masks[0], expected)
    assert pred.instances.classes.tolist() == [2]
