"""Row selection of the per-pixel tasks: a view when every sample is labelled, a gather otherwise."""

from __future__ import annotations

import torch

from drivemtl.tasks.dense import rows


def test_rows_returns_the_tensor_itself_when_all_rows_are_selected() -> None:
    maps = torch.randn(3, 2, 4, 4)
    assert rows(maps, torch.ones(3, dtype=torch.bool)) is maps


def test_rows_gathers_the_selected_rows_with_gradient() -> None:
    maps = torch.randn(3, 2, 4, 4, requires_grad=True)
    mask = torch.tensor([True, False, True])
    picked = rows(maps, mask)
    torch.testing.assert_close(picked, maps.detach()[[0, 2]])
    picked.sum().backward()
    assert maps.grad is not None
    assert float(maps.grad[1].abs().sum()) == 0.0 and float(maps.grad[0].sum()) == 32.0
