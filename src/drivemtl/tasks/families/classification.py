"""The image-level classifier family: global pooling on C5 and a linear layer per attribute.

Criterion: the sum over attributes of the cross entropy of the labelled samples whose value is
known (255 = unknown), the tagging loss of VTDNet.
"""

from __future__ import annotations

from pydantic import Field
from torch import Tensor, nn

from drivemtl.models.features import FeatureSpec
from drivemtl.models.heads.classification import GlobalPoolClassifier
from drivemtl.structures.batch import Batch
from drivemtl.tasks.base import zero_loss
from drivemtl.tasks.families.base import HEAD_FAMILIES, HeadFamily, HeadOptions
from drivemtl.tasks.losses import cross_entropy


class GlobalPoolOptions(HeadOptions):
    """Global-pool classifier on C5."""

    type: str = "global_pool"
    dropout: float = Field(0.0, ge=0.0, lt=1.0)


@HEAD_FAMILIES.register("global_pool")
class GlobalPoolFamily(HeadFamily):
    """A linear classifier per `task.attributes()` entry on globally pooled C5."""

    Options = GlobalPoolOptions
    kinds = ("image",)

    def build(self, spec: FeatureSpec) -> nn.Module:
        """The classifier module."""
        return GlobalPoolClassifier(spec, self.task.attributes(), dropout=self.options.dropout)

    def loss(self, outputs: dict[str, Tensor], batch: Batch) -> Tensor:
        """Sum over attributes of the CE of labelled samples whose value is known."""
        mask = self.task.labeled(batch)
        if not bool(mask.any()):
            return zero_loss(batch.images.device)
        targets = self.task.targets(batch)[mask]
        total = zero_loss(batch.images.device)
        for column, name in enumerate(self.task.attributes()):
            logits = outputs[name][mask.to(outputs[name].device)]
            total = total + cross_entropy(logits, targets[:, column].to(logits.device))
        return total
