import itertools

import pytest
import torch

from drivemtl.ops import hungarian_match


def brute_force_min_cost(cost: torch.Tensor) -> float:
    rows, cols = cost.shape
    if rows <= cols:
        return min(
            sum(cost[i, p[i]].item() for i in range(rows))
            for p in itertools.permutations(range(cols), rows)
        )
    return brute_force_min_cost(cost.t())


@pytest.mark.parametrize("shape", [(4, 4), (3, 5), (5, 2)])
def test_hungarian_is_optimal_against_brute_force(shape):
    cost = torch.rand(
        *shape, generator=torch.Generator().manual_seed(sum(shape)), dtype=torch.float64
    )
    rows, cols = hungarian_match(cost)
    assert len(rows) == len(cols) == min(shape)
    assert len(set(rows.tolist())) == len(rows) and len(set(cols.tolist())) == len(cols)
    assert rows.tolist() == sorted(rows.tolist())
    assert cost[rows, cols].sum().item() == pytest.approx(brute_force_min_cost(cost))


def test_hungarian_hand_case_forbidden_pairs_and_errors():
    cost = torch.tensor([[1.0, 2.0, 3.0], [2.0, 4.0, 6.0], [3.0, 6.0, 9.0]])
    rows, cols = hungarian_match(cost)
    assert cost[rows, cols].sum().item() == 10.0  # 3 + 4 + 3 (anti-diagonal)
    cost = torch.tensor([[0.0, float("inf")], [0.0, 5.0]])
    rows, cols = hungarian_match(cost)
    assert list(zip(rows.tolist(), cols.tolist(), strict=True)) == [(0, 0), (1, 1)]
    rows, cols = hungarian_match(torch.tensor([[1.0, 9.0]]), maximize=True)
    assert cols.tolist() == [1]
    assert hungarian_match(torch.zeros(0, 3))[0].numel() == 0
    with pytest.raises(ValueError, match="NaN"):
        hungarian_match(torch.tensor([[float("nan")]]))
