"""Semantic segmentation task: overfitting, masking, decoding back to original coordinates."""

from __future__ import annotations

import math

import torch
from batches import make_batch, overfit

from drivemtl.structures.batch import Batch
from drivemtl.structures.sample import SampleMeta
from drivemtl.tasks.semantic import SemanticTask


def test_overfits_tiny_batch() -> None:
    first, last = overfit("semantic", steps=30, lr=3e-3)
    assert last <= 0.2 * first


def test_loss_only_counts_labelled_samples() -> None:
    batch = make_batch(2, ("semantic",), labeled=[True, False])
    logits = torch.zeros(2, 19, 64, 96)
    logits[1] = torch.randn(19, 64, 96) * 10  # unlabelled sample: irrelevant
    loss = SemanticTask().loss({"logits": logits}, batch)
    assert math.isclose(float(loss), math.log(19), rel_tol=1e-6)
    none = make_batch(2, ("semantic",), labeled=[False, False])
    zero = SemanticTask().loss({"logits": logits.requires_grad_()}, none)
    assert float(zero) == 0.0 and not zero.requires_grad


def _batch(meta: SampleMeta, size: tuple[int, int], padded: tuple[int, int]) -> Batch:
    return Batch(
        images=torch.zeros(1, 3, *padded),
        image_sizes=[size],
        metas=[meta],
        labeled={},
        instances=[None],
        lane_lines=[None],
    )


def test_postprocess_undoes_resize_flip_and_padding() -> None:
    # The network saw a 2x down-scaled, flipped 4x6 image padded to 8x8; original is 8x12.
    meta = SampleMeta(name="a", image_set="s", orig_size=(8, 12), scale=(0.5, 0.5), flipped=True)
    logits = torch.full((1, 19, 8, 8), -10.0)
    logits[0, 3, :, :] = 0.0
    logits[0, 5, :4, :3] = 10.0  # left half of the flipped input = right half of the original
    (pred,) = SemanticTask().postprocess({"logits": logits}, _batch(meta, (4, 6), (8, 8)))
    assert pred.semantic.shape == (8, 12)
    expected = torch.full((8, 12), 3)
    expected[:, 6:] = 5
    assert torch.equal(pred.semantic, expected)
    # Away from the class boundary (bilinear mixing there) the probability stays near 1.
    assert pred.semantic_confidence[:, :5].min() > 0.99
    assert pred.semantic_confidence[:, 7:].min() > 0.99


def test_postprocess_puts_a_crop_back() -> None:
    meta = SampleMeta(name="a", image_set="s", orig_size=(4, 4), crop=(1, 2))
    logits = torch.zeros((1, 19, 2, 2))
    logits[0, 7] = 5.0
    (pred,) = SemanticTask().postprocess({"logits": logits}, _batch(meta, (2, 2), (2, 2)))
    assert pred.semantic[1:3, 2:4].eq(7).all()
    assert pred.semantic[0].eq(0).all() and pred.semantic[:, :2].eq(0).all()


def test_a_configured_class_list_sets_the_head_width_and_the_names() -> None:
    from drivemtl.models.config import TaskConfig

    task = SemanticTask(TaskConfig(head={"classes": ["flat", "vehicle", "sky"]}))
    assert task.classes == ("flat", "vehicle", "sky") and task.branches() == {"logits": 3}
    assert SemanticTask().classes[0] == "road" and len(SemanticTask().classes) == 19


def test_the_domain_map_is_the_weighted_self_information() -> None:
    logits = torch.tensor([[[[0.0]], [[1.0]], [[-2.0]]]], dtype=torch.float64)  # [1, 3, 1, 1]
    p = [math.exp(v) for v in (0.0, 1.0, -2.0)]
    p = [v / sum(p) for v in p]
    expected = [-v * math.log(v) for v in p]
    got = SemanticTask().domain_map({"logits": logits}, make_batch(1, ("semantic",)))
    assert got.shape == (1, 3, 1, 1)
    assert torch.allclose(got.flatten().double(), torch.tensor(expected, dtype=torch.float64))
