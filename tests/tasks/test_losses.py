"""Shared dense losses against float64 reference implementations."""

from __future__ import annotations

import math

import torch

from drivemtl.tasks.losses import balanced_bce, berhu, cosine_loss, cross_entropy, l1


def test_berhu_reference() -> None:
    torch.manual_seed(0)
    pred, target = torch.randn(2, 5, 7), torch.randn(2, 5, 7)
    valid = torch.rand(2, 5, 7) > 0.3
    err = (pred - target).double()[valid].abs()
    c = 0.2 * float(err.max())
    ref = sum(float(e) if e <= c else (float(e) ** 2 + c * c) / (2 * c) for e in err) / err.numel()
    assert math.isclose(float(berhu(pred, target, valid)), ref, rel_tol=1e-5)
    assert math.isclose(float(l1(pred, target, valid)), float(err.mean()), rel_tol=1e-5)


def test_balanced_bce_reference() -> None:
    logits = torch.tensor([[[2.0, -1.0, 0.5, 0.0]], [[1.0, 1.0, -3.0, 4.0]]])
    target = torch.tensor([[[1, 0, 0, 255]], [[0, 0, 0, 1]]])
    total = 0.0
    for b in range(2):
        t = target[b, 0]
        valid = t != 255
        n_pos = int((t == 1).sum())
        n_neg = int((t == 0).sum())
        for x in range(4):
            if not bool(valid[x]):
                continue
            p = 1 / (1 + math.exp(-float(logits[b, 0, x])))
            if int(t[x]) == 1:
                total += -(n_neg / (n_pos + n_neg)) * math.log(p)
            else:
                total += -(n_pos / (n_pos + n_neg)) * math.log(1 - p)
    expected = total / 7
    assert math.isclose(float(balanced_bce(logits, target)), expected, rel_tol=1e-5)


def test_cosine_and_empty_cases_are_exact_zero_without_gradient() -> None:
    pred = torch.randn(1, 3, 2, 2, requires_grad=True)
    none = torch.zeros(1, 2, 2, dtype=torch.bool)
    for value in (
        cosine_loss(pred, pred.detach(), none),
        berhu(pred[:, 0], pred[:, 0].detach(), none),
        cross_entropy(pred, torch.full((1, 2, 2), 255)),
        balanced_bce(pred[:, 0], torch.full((1, 2, 2), 255)),
    ):
        assert float(value) == 0.0 and not value.requires_grad
    same = cosine_loss(pred, pred.detach() * 3, ~none)
    assert abs(float(same.detach())) < 1e-6
