"""Drivable-area task: overfitting and decoding."""

from __future__ import annotations

import torch
from batches import make_batch, overfit

from drivemtl.tasks.drivable import DrivableTask


def test_overfits_tiny_batch() -> None:
    first, last = overfit("drivable", steps=30, lr=3e-3)
    assert last <= 0.2 * first


def test_postprocess_hand_made_logits() -> None:
    batch = make_batch(1, ("drivable",))
    logits = torch.zeros(1, 3, 64, 96)
    logits[0, 2, :33] = 4.0
    logits[0, 0, 33:, :48] = 4.0
    logits[0, 1, 33:, 48:] = 4.0
    (pred,) = DrivableTask().postprocess({"logits": logits}, batch)
    assert torch.equal(pred.drivable, batch.drivable[0])
    assert pred.semantic is None
    # the confidence is the softmax peak: e^4 / (e^4 + 2) where one class leads by 4
    expected = torch.exp(torch.tensor(4.0)) / (torch.exp(torch.tensor(4.0)) + 2)
    assert torch.allclose(pred.drivable_confidence, torch.full((64, 96), float(expected)))
