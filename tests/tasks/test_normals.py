"""Normals task: 1 - cos loss, overfitting, unit vectors and flip handling."""

from __future__ import annotations

import math

import torch
from batches import make_batch, overfit

from drivemtl.tasks.normals import NormalsTask


def test_loss_is_one_minus_cosine_over_valid_pixels() -> None:
    batch = make_batch(1, ("normals",))
    target = torch.zeros(1, 3, 1, 3)
    target[0, :, 0, 0] = torch.tensor([0.0, 0.0, 1.0])
    target[0, :, 0, 1] = torch.tensor([1.0, 0.0, 0.0])  # last pixel all-zero = invalid
    batch.normals = target
    pred = torch.zeros(1, 3, 1, 3)
    pred[0, :, 0, 0] = torch.tensor([0.0, 0.0, 5.0])  # cos 1
    pred[0, :, 0, 1] = torch.tensor([1.0, 1.0, 0.0])  # cos 1/sqrt(2)
    pred[0, :, 0, 2] = torch.tensor([-1.0, 0.0, 0.0])
    loss = NormalsTask().loss({"normals": pred}, batch)
    assert math.isclose(float(loss), (1 - 1 / math.sqrt(2)) / 2, rel_tol=1e-5)


def test_overfits_tiny_batch() -> None:
    first, last = overfit("normals", steps=30, lr=3e-3)
    assert last <= 0.2 * first


def test_postprocess_normalises_and_unflips() -> None:
    batch = make_batch(1, ("normals",))
    raw = torch.zeros(1, 3, 64, 96)
    raw[0, 0] = 2.0
    raw[0, 2] = 2.0
    (pred,) = NormalsTask().postprocess({"normals": raw}, batch)
    assert torch.allclose(pred.normals[:, 5, 5], torch.tensor([1.0, 0.0, 1.0]) / math.sqrt(2))
    batch.metas[0].flipped = True
    (flipped,) = NormalsTask().postprocess({"normals": raw}, batch)
    assert torch.allclose(flipped.normals[:, 5, 5], torch.tensor([-1.0, 0.0, 1.0]) / math.sqrt(2))


def test_the_domain_map_is_the_unit_normal_in_0_1() -> None:
    raw = torch.tensor([3.0, 4.0, 0.0]).view(1, 3, 1, 1)
    got = NormalsTask().domain_map({"normals": raw}, make_batch(1, ("normals",)))
    assert torch.allclose(got.flatten(), torch.tensor([0.8, 0.9, 0.5]), atol=1e-6)
