"""NaN / Inf guard: skip, count consecutive, reset on a finite step, stop after K."""

from __future__ import annotations

import pytest
import torch

from drivemtl.engine.nan_guard import NanGuard, NonFiniteLossError


def test_skips_then_stops_after_k_in_a_row() -> None:
    guard = NanGuard(max_consecutive=3)
    nan = torch.tensor(float("nan"))
    losses = {"semantic": torch.tensor(1.0), "depth": torch.tensor(float("inf"))}
    assert guard.check(torch.tensor(1.0), losses, step=0)
    assert not guard.check(nan, losses, step=1)
    assert not guard.check(nan, losses, step=2)
    assert guard.check(torch.tensor(0.5), losses, step=3)  # resets the streak
    assert guard.consecutive == 0 and guard.skipped_total == 2
    assert not guard.check(nan, losses, step=4)
    assert not guard.check(nan, losses, step=5)
    with pytest.raises(NonFiniteLossError, match=r"3 consecutive steps.*tasks: depth"):
        guard.check(nan, losses, step=6)


def test_state_round_trip() -> None:
    guard = NanGuard(2)
    guard.check(torch.tensor(float("inf")), {}, step=0)
    other = NanGuard(2)
    other.load_state_dict(guard.state_dict())
    with pytest.raises(NonFiniteLossError):
        other.check(torch.tensor(float("nan")), {}, step=1)
