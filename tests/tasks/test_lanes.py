"""Lane task: foreground-weighted CE against a float64 reference, overfitting, decoding."""

from __future__ import annotations

import torch
from batches import make_batch, overfit

from drivemtl.tasks.lanes import LANE_GROUPS, LanesTask


def _reference(logits: torch.Tensor, target: torch.Tensor, fg: float) -> torch.Tensor:
    logp = logits.double().log_softmax(dim=1)
    num = den = 0.0
    for b in range(target.shape[0]):
        for y in range(target.shape[1]):
            for x in range(target.shape[2]):
                t = int(target[b, y, x])
                if t == 255:
                    continue
                w = 1.0 if t == 0 else fg
                num += -w * float(logp[b, t, y, x])
                den += w
    return torch.tensor(num / den, dtype=torch.float64)


def test_loss_weights_foreground_ten_times() -> None:
    torch.manual_seed(0)
    batch = make_batch(1, ("lanes",))
    small = batch.lanes[:, :, 30:38, :10].clone()
    small[0, 0, 0, 0] = 255
    batch.lanes = small
    batch.images = batch.images[..., :8, :10]
    outputs = {g: torch.randn(1, c, 8, 10) for g, c in LANE_GROUPS.items()}
    loss = LanesTask().loss(outputs, batch)
    expected = sum(_reference(outputs[g], small[:, i], 10.0) for i, g in enumerate(LANE_GROUPS))
    assert torch.allclose(loss.double(), expected, atol=1e-5)


def test_overfits_tiny_batch() -> None:
    first, last = overfit("lanes", steps=40, lr=1e-2)
    assert last <= 0.2 * first


def test_postprocess_three_groups() -> None:
    batch = make_batch(1, ("lanes",))
    outputs = {g: torch.zeros(1, c, 64, 96) for g, c in LANE_GROUPS.items()}
    outputs["category"][0, 4, 10:20, 5:9] = 3.0
    outputs["direction"][0, 2, 10:20, 5:9] = 3.0
    outputs["style"][0, 1] = 3.0
    (pred,) = LanesTask().postprocess(outputs, batch)
    assert pred.lanes.shape == (3, 64, 96)
    assert pred.lanes[0, 10:20, 5:9].eq(4).all() and pred.lanes[0].sum() == 4 * 40
    assert pred.lanes[1, 10:20, 5:9].eq(2).all() and pred.lanes[1].sum() == 2 * 40
    assert pred.lanes[2].eq(1).all()
