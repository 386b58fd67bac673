"""Edges task: class-balanced BCE, overfitting, probability maps."""

from __future__ import annotations

import torch
from batches import make_batch, overfit

from drivemtl.tasks.edges import EdgesTask


def test_overfits_tiny_batch() -> None:
    first, last = overfit("edges", steps=60, lr=1e-2)
    assert last <= 0.2 * first


def test_postprocess_is_sigmoid() -> None:
    batch = make_batch(1, ("edges",))
    logits = torch.zeros(1, 1, 64, 96)
    logits[0, 0, 10] = 3.0
    (pred,) = EdgesTask().postprocess({"logits": logits}, batch)
    assert pred.edges.shape == (64, 96)
    assert torch.allclose(pred.edges[10], torch.sigmoid(torch.tensor(3.0)).expand(96))
    assert torch.allclose(pred.edges[20], torch.full((96,), 0.5))


def test_the_domain_map_is_the_binary_entropy() -> None:
    logits = torch.tensor([0.0, 2.0, -40.0]).view(1, 1, 1, 3)
    p = torch.tensor([0.5, 1 / (1 + 2.718281828459045**-2), 0.0], dtype=torch.float64)
    expected = -(p * p.clamp(min=1e-300).log() + (1 - p) * (1 - p).log())
    got = EdgesTask().domain_map({"logits": logits}, make_batch(1, ("edges",)))
    assert torch.allclose(got.flatten().double(), expected, atol=1e-6)
