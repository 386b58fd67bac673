"""Frozen stages of a backbone: no gradient, and eval mode even while the network trains."""

from __future__ import annotations

from typing import Self

from torch import nn


class FrozenStagesMixin(nn.Module):
    """Backbones list the modules their `frozen_stages` option freezes in `frozen_modules()`;
    `_freeze()` turns their gradients off once, and `train()` keeps them in eval mode (frozen
    normalisation statistics, no stochastic depth)."""

    def frozen_modules(self) -> list[nn.Module]:
        """Modules frozen by the backbone's `frozen_stages` (stem first); none by default."""
        return []

    def _freeze(self) -> None:
        for module in self.frozen_modules():
            module.eval()
            for parameter in module.parameters():
                parameter.requires_grad_(False)

    def train(self, mode: bool = True) -> Self:
        """Switch train / eval mode; frozen stages always stay in eval mode."""
        super().train(mode)
        for module in self.frozen_modules():
            module.eval()
        return self
