"""The `track_join` family: a head without parameters for tasks that only combine other tasks'
predictions (MOTS joins the tracker's ids with the instance masks).

Its module runs in the stage graph like any head (reading nothing, returning None), so the task
fits the network, the trainer and the checkpoints unchanged; its criterion is an exact zero that
sends no gradient.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from drivemtl.models.features import Features, FeatureSpec
from drivemtl.structures.batch import Batch
from drivemtl.tasks.base import zero_loss
from drivemtl.tasks.families.base import HEAD_FAMILIES, HeadFamily, HeadOptions


class TrackJoinOptions(HeadOptions):
    """No options of its own (a task's extras may add some)."""

    type: str = "track_join"


class EmptyHead(nn.Module):
    """A head with no parameters and no output."""

    def forward(self, features: Features, batch: Batch | None = None) -> None:
        """Nothing to compute: the task works on other tasks' predictions."""
        return None


@HEAD_FAMILIES.register("track_join")
class TrackJoinFamily(HeadFamily):
    """An empty module and a zero loss, for tasks of kind `track_join`."""

    Options = TrackJoinOptions
    kinds = ("track_join",)

    def build(self, spec: FeatureSpec) -> nn.Module:
        """The parameter-free head."""
        return EmptyHead()

    def loss(self, outputs: Any, batch: Batch) -> Tensor:
        """An exact zero without gradient, labelled samples or not."""
        return zero_loss(batch.images.device)
