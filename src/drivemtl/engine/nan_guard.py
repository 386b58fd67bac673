"""Guard against non-finite losses: skip the step, log it, stop after K in a row."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from drivemtl.errors import DriveMTLError
from drivemtl.log import get_logger

log = get_logger(__name__)


class NonFiniteLossError(DriveMTLError, RuntimeError):
    """Training produced NaN / Inf losses for too many consecutive steps."""


class NanGuard:
    """Counts consecutive non-finite steps; `check` says whether a step may proceed.

    A step whose total loss is NaN / Inf is skipped (no backward, no optimiser step) and logged with
    the tasks whose losses were non-finite; after `max_consecutive` such steps in a row the run
    stops with `NonFiniteLossError`. The counters are part of the checkpoint (`state_dict`).
    """

    def __init__(self, max_consecutive: int = 5) -> None:
        if max_consecutive <= 0:
            raise ValueError(f"max_consecutive must be positive, got {max_consecutive}")
        self.max_consecutive = max_consecutive
        self.consecutive = 0
        self.skipped_total = 0

    def check(
        self, total: Tensor, losses: Mapping[str, Tensor], step: int, where: str = ""
    ) -> bool:
        """True if `total` is finite; otherwise record a skipped step (raising after K in a row)."""
        if bool(torch.isfinite(total.detach()).all()):
            self.consecutive = 0
            return True
        return self.record_nonfinite(losses, step, where)

    def record_nonfinite(self, losses: Mapping[str, Tensor], step: int, where: str = "") -> bool:
        """Record one skipped step (when the decision was taken elsewhere, e.g. across ranks)."""
        self.consecutive += 1
        self.skipped_total += 1
        bad = [t for t, v in losses.items() if not bool(torch.isfinite(v.detach()).all())]
        prefix = f"{where}: " if where else ""
        log.warning(
            "%snon-finite loss at step %d (tasks: %s); step skipped (%d in a row, limit %d)",
            prefix,
            step,
            ", ".join(bad) or "total only",
            self.consecutive,
            self.max_consecutive,
        )
        if self.consecutive >= self.max_consecutive:
            raise NonFiniteLossError(
                f"{prefix}loss was NaN / Inf for {self.consecutive} consecutive steps (last at step "
                f"{step}, tasks: {', '.join(bad) or 'total only'}); lower the learning rate, enable "
                "gradient clipping (stage grad_clip) or check the labels of these tasks"
            )
        return False

    def state_dict(self) -> dict[str, int]:
        """Counters to store in a checkpoint."""
        return {"consecutive": self.consecutive, "skipped_total": self.skipped_total}

    def load_state_dict(self, state: Mapping[str, int]) -> None:
        """Restore counters saved by `state_dict`."""
        self.consecutive = int(state["consecutive"])
        self.skipped_total = int(state["skipped_total"])
