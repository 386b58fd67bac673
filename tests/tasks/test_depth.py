"""Depth task: berHu on inverse normalised depth, overfitting, decoding to metres."""

from __future__ import annotations

import math

import torch
from batches import make_batch, overfit

from drivemtl.models.config import TaskConfig
from drivemtl.tasks.depth import DepthTask


def _inverse_logit(value: float) -> float:
    """x with softplus(x) = value."""
    return math.log(math.expm1(value))


def test_loss_is_berhu_of_inverse_depth() -> None:
    batch = make_batch(1, ("depth",))
    depth = torch.zeros(1, 1, 3)
    depth[0, 0] = torch.tensor([10.0, 20.0, 0.0])  # last pixel invalid
    batch.depth = depth
    raw = torch.tensor([_inverse_logit(8.0), _inverse_logit(1.0), 5.0]).view(1, 1, 1, 3)
    # targets 80/10 = 8, 80/20 = 4 -> errors 0, 3; c = 0.6 -> (9 + 0.36) / 1.2 = 7.8
    loss = DepthTask().loss({"inverse": raw}, batch)
    assert math.isclose(float(loss), (0.0 + 7.8) / 2, rel_tol=1e-5)
    l1 = DepthTask(TaskConfig(head={"loss": "l1"})).loss({"inverse": raw}, batch)
    assert math.isclose(float(l1), 1.5, rel_tol=1e-5)


def test_overfits_tiny_batch() -> None:
    first, last = overfit("depth", steps=40, lr=1e-2)
    assert last <= 0.2 * first


def test_postprocess_returns_metres() -> None:
    batch = make_batch(1, ("depth",))
    raw = torch.full((1, 1, 64, 96), _inverse_logit(4.0))
    raw[0, 0, :, :48] = _inverse_logit(0.5)  # 160 m, clamped to max_depth 80
    (pred,) = DepthTask().postprocess({"inverse": raw}, batch)
    assert torch.allclose(pred.depth[:, 60:], torch.full((64, 36), 20.0), rtol=1e-5)
    assert torch.allclose(pred.depth[:, :40], torch.full((64, 40), 80.0))


def test_the_domain_map_is_depth_normalised_by_the_range() -> None:
    raw = torch.tensor([[[[0.5, 3.0, -30.0]]]])  # inverse-depth logits
    inverse = [math.log1p(math.exp(v)) for v in (0.5, 3.0, -30.0)]
    depth = [min(max(80.0 / v, 0.1), 80.0) for v in inverse]
    expected = torch.tensor([(d - 0.1) / 79.9 for d in depth])
    got = DepthTask().domain_map({"inverse": raw}, make_batch(1, ("depth",)))
    assert got.shape == (1, 1, 1, 3) and torch.allclose(got.flatten(), expected, atol=1e-6)
    assert float(got.max()) == 1.0  # far (tiny inverse) clamps to d_far
