"""The quasi-dense criterion: both losses against float64 loop references, the targets, and the
family loss over a batch (weights, labelled images only, an exact zero without labels)."""

from __future__ import annotations

import math

import pytest
import torch
from batches import make_batch

from drivemtl.models.config import TaskConfig
from drivemtl.models.heads.embedding_head import EmbeddingOutputs
from drivemtl.tasks import TASKS
from drivemtl.tasks.families.quasi_dense import (
    auxiliary_l2,
    match_targets,
    multi_positive_cross_entropy,
)


def _ce_reference(sim: list[list[float]], targets: list[list[int]]) -> tuple[float, int]:
    total, rows = 0.0, 0
    for s_row, t_row in zip(sim, targets, strict=True):
        pos = [s for s, t in zip(s_row, t_row, strict=True) if t]
        neg = [s for s, t in zip(s_row, t_row, strict=True) if not t]
        if not pos:
            continue
        total += math.log(1.0 + sum(math.exp(n - p) for p in pos for n in neg))
        rows += 1
    return total, rows


def _l2_reference(
    cos: list[list[float]], targets: list[list[int]], margin: float, ratio: float
) -> tuple[float, int]:
    pos_err, neg_err = [], []
    for c_row, t_row in zip(cos, targets, strict=True):
        for c, t in zip(c_row, t_row, strict=True):
            if t:
                pos_err.append((min(max(c, 0.0), 1.0) - 1.0) ** 2)
            else:
                neg_err.append(min(max(c - margin, 0.0), 1.0) ** 2)
    limit = int(ratio * len(pos_err))
    if len(neg_err) > limit:
        neg_err = sorted(neg_err, reverse=True)[:limit]
    kept = pos_err + neg_err
    return sum(kept), len(kept)


SIM = [
    [2.0, -1.0, 0.5, 3.0, -0.2, 1.1],
    [0.3, 0.3, -2.0, 1.0, 0.0, 0.7],
    [-1.5, 2.5, 0.1, 0.2, -0.7, 0.9],  # no positive: not counted
    [1.0, 0.4, 0.9, -0.3, 0.8, 2.2],
]
TARGETS = [[1, 0, 0, 1, 0, 0], [0, 1, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0], [0, 0, 1, 0, 1, 0]]


def test_multi_positive_cross_entropy_matches_the_double_sum() -> None:
    loss, rows = multi_positive_cross_entropy(
        torch.tensor(SIM, dtype=torch.float64), torch.tensor(TARGETS, dtype=torch.float64)
    )
    ref, ref_rows = _ce_reference(SIM, TARGETS)
    assert rows == ref_rows == 3
    assert float(loss) == pytest.approx(ref, rel=1e-12)


def test_multi_positive_cross_entropy_edge_cases() -> None:
    all_pos = torch.ones(2, 3, dtype=torch.float64)
    loss, rows = multi_positive_cross_entropy(torch.randn(2, 3, dtype=torch.float64), all_pos)
    assert rows == 2 and float(loss) == 0.0  # no negatives: log(1 + 0)
    loss, rows = multi_positive_cross_entropy(torch.randn(2, 3), torch.zeros(2, 3))
    assert rows == 0 and float(loss) == 0.0
    # Large similarities stay finite (log-sum-exp), ~ s_neg - s_pos.
    big = torch.tensor([[500.0, 900.0, -300.0]])
    loss, _ = multi_positive_cross_entropy(big, torch.tensor([[1.0, 0.0, 0.0]]))
    assert float(loss) == pytest.approx(400.0, rel=1e-6)


def test_multi_positive_cross_entropy_gradient_matches_float64() -> None:
    sim = torch.tensor(SIM, dtype=torch.float64, requires_grad=True)
    loss, _ = multi_positive_cross_entropy(sim, torch.tensor(TARGETS, dtype=torch.float64))
    loss.backward()
    assert torch.autograd.gradcheck(
        lambda s: multi_positive_cross_entropy(s, torch.tensor(TARGETS, dtype=torch.float64))[0],
        (sim.detach().clone().requires_grad_(),),
    )
    assert sim.grad[2].abs().sum() == 0  # the row without positives sends nothing


@pytest.mark.parametrize("ratio", [3.0, 1.0, 0.0])
def test_auxiliary_l2_matches_the_reference(ratio: float) -> None:
    cos = [
        [0.9, 0.05, 0.5, 0.3, -0.4, 0.12],
        [0.2, 1.2, 0.8, 0.6, 0.11, 0.09],
        [0.7, 0.3, -0.1, 0.95, 0.5, 0.45],
    ]
    targets = [[1, 0, 0, 0, 0, 0], [0, 1, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0]]
    loss, count = auxiliary_l2(
        torch.tensor(cos, dtype=torch.float64), torch.tensor(targets, dtype=torch.float64),
        0.1, ratio,
    )  # fmt: skip
    ref, ref_count = _l2_reference(cos, targets, 0.1, ratio)
    assert count == ref_count == 2 + int(ratio * 2)
    assert float(loss) == pytest.approx(ref, rel=1e-12)


def test_auxiliary_l2_keeps_every_negative_below_the_cap() -> None:
    cos = [[0.8, 0.05, 0.6]]  # one positive, two negatives (cap 3): all kept
    loss, count = auxiliary_l2(torch.tensor(cos), torch.tensor([[1.0, 0.0, 0.0]]))
    assert count == 3
    assert float(loss) == pytest.approx(0.2**2 + 0.0 + 0.5**2, rel=1e-6)


def test_match_targets_need_equal_non_negative_ids() -> None:
    targets = match_targets(torch.tensor([3, 5, -1]), torch.tensor([5, -1, 3, 3]))
    assert targets.tolist() == [[0, 0, 1, 1], [1, 0, 0, 0], [0, 0, 0, 0]]


def _task(**head):
    return TASKS.get("mot")(TaskConfig(head={"type": "quasi_dense", **head}))


def _outputs(key: torch.Tensor, ref: torch.Tensor) -> EmbeddingOutputs:
    empty = torch.zeros((0, key.shape[1]), dtype=key.dtype)
    ids = torch.tensor([1, 2])
    return EmbeddingOutputs(
        key_embeds=[key, empty], key_ids=[ids, torch.zeros(0, dtype=torch.long)],
        ref_embeds=[ref, empty], ref_ids=[torch.tensor([2, -1, 1]),
                                          torch.zeros(0, dtype=torch.long)],
    )  # fmt: skip


def test_family_loss_weights_both_terms_over_labelled_images() -> None:
    batch = make_batch(2, ("detection", "mot"))
    batch.references = [make_batch(2, ("detection", "mot"))]
    g = torch.Generator().manual_seed(0)
    key = torch.randn(2, 4, generator=g, dtype=torch.float64)
    ref = torch.randn(3, 4, generator=g, dtype=torch.float64)
    targets = [[0, 0, 1], [1, 0, 0]]
    sim = (key @ ref.T).tolist()
    cos = torch.nn.functional.normalize(key, dim=1) @ torch.nn.functional.normalize(ref, dim=1).T
    ce, rows = _ce_reference(sim, targets)
    l2, count = _l2_reference(cos.tolist(), targets, 0.1, 3.0)
    loss = _task().loss(_outputs(key, ref), batch)
    assert float(loss) == pytest.approx(0.25 * ce / rows + 1.0 * l2 / count, rel=1e-10)
    loss = _task(embed_weight=1.0, aux_weight=0.0).loss(_outputs(key, ref), batch)
    assert float(loss) == pytest.approx(ce / rows, rel=1e-10)


def test_family_loss_is_an_exact_zero_without_labels() -> None:
    batch = make_batch(2, ("detection", "mot"), labeled=[False, False])
    key = torch.randn(2, 4, requires_grad=True)
    loss = _task().loss(_outputs(key, torch.randn(3, 4)), batch)
    assert loss.item() == 0.0 and not loss.requires_grad
