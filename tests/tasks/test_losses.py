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


def test_cosine_loss_and_its_gradient_against_float64_reference() -> None:
    torch.manual_seed(1)
    pred = torch.randn(2, 3, 4, 5, requires_grad=True)
    target = torch.randn(2, 3, 4, 5)
    valid = torch.rand(2, 4, 5) > 0.4
    total, count = 0.0, 0
    p64, t64 = pred.detach().double(), target.double()
    for b, y, x in valid.nonzero().tolist():
        p, t = p64[b, :, y, x], t64[b, :, y, x]
        total += 1.0 - float(p @ t) / (float(p.norm()) * float(t.norm()))
        count += 1
    loss = cosine_loss(pred, target, valid)
    assert math.isclose(float(loss), total / count, rel_tol=1e-6)
    loss.backward()
    ref_pred = pred.detach().double().requires_grad_()
    cos = torch.nn.functional.cosine_similarity(ref_pred, target.double(), dim=1)
    (1.0 - cos)[valid].mean().backward()
    torch.testing.assert_close(pred.grad.double(), ref_pred.grad, rtol=1e-5, atol=1e-7)


def test_masked_losses_ignore_nan_and_zero_vectors_outside_valid() -> None:
    pred = torch.randn(1, 3, 2, 2)
    pred[0, :, 0, 0] = float("nan")
    pred[0, :, 1, 1] = 0.0  # a zero vector: finite gradient through the eps clamp
    pred.requires_grad_()
    target = torch.randn(1, 3, 2, 2)
    valid = torch.tensor([[[False, True], [True, True]]])
    for loss in (
        cosine_loss(pred, target, valid),
        berhu(pred[:, 0], target[:, 0], valid),
        l1(pred[:, 0], target[:, 0], valid),
    ):
        assert math.isfinite(float(loss))
        (grad,) = torch.autograd.grad(loss, pred)
        assert bool(torch.isfinite(grad).all()) and float(grad[0, :, 0, 0].abs().sum()) == 0.0
