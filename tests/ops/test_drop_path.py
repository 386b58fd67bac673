"""Stochastic depth: whole samples dropped, the rest rescaled, identity in eval."""

from __future__ import annotations

import pytest
import torch

from drivemtl.ops.drop_path import DropPath, drop_path


def test_drop_path_drops_whole_samples_and_rescales_the_rest() -> None:
    torch.manual_seed(0)
    drop = DropPath(0.5)
    x = torch.rand(64, 3, 2, 2) + 1.0
    y = drop(x)
    kept = (y != 0).flatten(1).all(dim=1)
    dropped = (y == 0).flatten(1).all(dim=1)
    assert bool((kept | dropped).all()) and 0 < int(kept.sum()) < 64
    torch.testing.assert_close(y[kept], x[kept] / 0.5)
    assert torch.equal(drop.eval()(x), x)


def test_drop_path_off_and_bad_rates() -> None:
    x = torch.rand(4, 3)
    assert drop_path(x, 0.0, training=True) is x and drop_path(x, 0.5, training=False) is x
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        DropPath(1.0)
