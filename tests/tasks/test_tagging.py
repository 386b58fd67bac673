"""Tagging task: overfitting, masked loss, decoding of hand-made logits."""

from __future__ import annotations

import math

import torch
from batches import make_batch, overfit

from drivemtl.tasks.tagging import TaggingTask


def test_overfits_tiny_batch() -> None:
    first, last = overfit("tagging", steps=30, lr=3e-3)
    assert last <= 0.2 * first


def test_loss_matches_reference_and_uses_labelled_samples_only() -> None:
    batch = make_batch(2, ("tagging",), labeled=[True, False])
    logits = {
        "weather": torch.zeros(2, 7),
        "scene": torch.zeros(2, 7),
        "timeofday": torch.zeros(2, 4),
    }
    logits["weather"][1] = 100.0  # the unlabelled sample must not matter
    loss = TaggingTask().loss(logits, batch)
    assert math.isclose(float(loss), 2 * math.log(7) + math.log(4), rel_tol=1e-6)


def test_unknown_tags_are_ignored_and_none_labelled_is_exact_zero() -> None:
    batch = make_batch(2, ("tagging",), labeled=[False, False])
    outputs = {n: torch.randn(2, k, requires_grad=True) for n, k in
               (("weather", 7), ("scene", 7), ("timeofday", 4))}  # fmt: skip
    loss = TaggingTask().loss(outputs, batch)
    assert float(loss) == 0.0 and not loss.requires_grad


def test_postprocess_hand_made_logits() -> None:
    batch = make_batch(1, ("tagging",))
    outputs = {
        "weather": torch.tensor([[0.0, 0.0, math.log(3.0), 0.0, 0.0, 0.0, 0.0]]),
        "scene": torch.tensor([[5.0, 0, 0, 0, 0, 0, 0]]),
        "timeofday": torch.tensor([[0.0, 0.0, 0.0, 1.0]]),
    }
    (pred,) = TaggingTask().postprocess(outputs, batch)
    assert pred.tags.tolist() == [2, 0, 3]
    assert math.isclose(float(pred.tag_scores[0]), 3 / 9, rel_tol=1e-6)
    assert math.isclose(float(pred.tag_scores[2]), math.e / (math.e + 3), rel_tol=1e-6)


def test_attribute_weights_scale_each_cross_entropy() -> None:
    """VTD's tagging (Table 11): weather and scene only, time of day weighted 0."""
    import pytest

    from drivemtl.config.loader import ConfigError
    from drivemtl.models.config import TaskConfig

    batch = make_batch(2, ("tagging",), labeled=[True, True])
    logits = {"weather": torch.zeros(2, 7), "scene": torch.zeros(2, 7),
              "timeofday": torch.zeros(2, 4)}  # fmt: skip
    weights = {"timeofday": 0.0, "scene": 2.0}
    task = TaggingTask(TaskConfig(head={"attribute_weights": weights}))
    assert math.isclose(float(task.loss(logits, batch)), 3 * math.log(7), rel_tol=1e-6)
    with pytest.raises(ConfigError, match="unknown attributes \\['season'\\]"):
        TaggingTask(TaskConfig(head={"attribute_weights": {"season": 1.0}}))
    with pytest.raises(ConfigError, match=">= 0"):
        TaggingTask(TaskConfig(head={"attribute_weights": {"scene": -1.0}}))
