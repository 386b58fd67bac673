"""Set-prediction losses and pairwise costs against float64 loops and hand-computed values."""

from __future__ import annotations

import math

import torch

from drivemtl.ops.set_losses import (
    dice_loss,
    pairwise_class_focal_cost,
    pairwise_dice_cost,
    pairwise_mask_focal_cost,
    sigmoid_focal_loss,
)


def _sig(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def _focal(x: float, t: float, alpha: float = 0.25, gamma: float = 2.0) -> float:
    p = _sig(x)
    if t == 1.0:
        return -alpha * (1 - p) ** gamma * math.log(p)
    return -(1 - alpha) * p**gamma * math.log(1 - p)


def test_focal_loss_at_known_values() -> None:
    # p = 0.5 for a positive: 0.25 * 0.25 * ln 2; for a negative: 0.75 * 0.25 * ln 2
    loss = sigmoid_focal_loss(torch.zeros(2), torch.tensor([1.0, 0.0]))
    torch.testing.assert_close(loss, torch.tensor([0.0625, 0.1875]) * math.log(2))
    # gamma 0, alpha off: plain binary cross entropy
    x, t = torch.randn(5), torch.tensor([1.0, 0.0, 1.0, 1.0, 0.0])
    bce = torch.nn.functional.binary_cross_entropy_with_logits(x, t, reduction="none")
    torch.testing.assert_close(sigmoid_focal_loss(x, t, alpha=-1, gamma=0.0), bce)


def test_focal_loss_against_float64_loop() -> None:
    torch.manual_seed(0)
    x = torch.randn(4, 6) * 3
    t = (torch.rand(4, 6) > 0.5).float()
    ref = [[_focal(float(x[i, j]), float(t[i, j])) for j in range(6)] for i in range(4)]
    torch.testing.assert_close(
        sigmoid_focal_loss(x, t).double(),
        torch.tensor(ref, dtype=torch.float64),
        rtol=1e-5,
        atol=1e-7,
    )


def test_dice_at_known_values() -> None:
    big = torch.tensor([[20.0, 20.0, -20.0, -20.0]])
    target = torch.tensor([[1.0, 1.0, 0.0, 0.0]])
    # a perfect soft mask: 1 - (2 * 2 + 1) / (2 + 2 + 1) = 0
    assert abs(float(dice_loss(big, target))) < 1e-6
    # p = 0.5 everywhere: 1 - (2 * 1 + 1) / (2 + 2 + 1) = 0.4
    torch.testing.assert_close(dice_loss(torch.zeros(1, 4), target), torch.tensor([0.4]))


def test_pairwise_costs_equal_the_per_pair_losses() -> None:
    torch.manual_seed(1)
    logits = torch.randn(5, 30, dtype=torch.float64) * 2
    targets = (torch.rand(3, 30, dtype=torch.float64) > 0.6).double()
    dice = pairwise_dice_cost(logits, targets)
    focal = pairwise_mask_focal_cost(logits, targets)
    assert dice.shape == focal.shape == (5, 3)
    for q in range(5):
        for g in range(3):
            torch.testing.assert_close(
                dice[q, g], dice_loss(logits[q : q + 1], targets[g : g + 1])[0]
            )
            ref = sum(_focal(float(logits[q, k]), float(targets[g, k])) for k in range(30)) / 30
            assert math.isclose(float(focal[q, g]), ref, rel_tol=1e-9)


def test_class_focal_cost_is_positive_minus_negative_term() -> None:
    torch.manual_seed(2)
    logits = torch.randn(4, 3, dtype=torch.float64)
    classes = torch.tensor([2, 0, 2])
    cost = pairwise_class_focal_cost(logits, classes)
    for q in range(4):
        for g, c in enumerate(classes.tolist()):
            x = float(logits[q, c])
            ref = _focal(x, 1.0) - _focal(x, 0.0)
            assert math.isclose(
                float(cost[q, g]), ref, rel_tol=1e-5, abs_tol=1e-7
            )  # eps 1e-8 in log
    # a confident correct query costs less than an unsure one
    sure = pairwise_class_focal_cost(torch.tensor([[5.0, -5.0]]), torch.tensor([0]))
    unsure = pairwise_class_focal_cost(torch.tensor([[0.0, 0.0]]), torch.tensor([0]))
    assert float(sure) < float(unsure)
