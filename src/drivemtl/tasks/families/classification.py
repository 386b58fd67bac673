"""The image-level classifier family: global pooling on C5 and a linear layer per attribute.

Criterion: the sum over attributes of the cross entropy of the labelled samples whose value is
known (255 = unknown), the tagging loss of VTDNet, each attribute's term scaled by its
`attribute_weights` entry (default 1). VTD tags weather and scene only (Table 11: 0.05 each):
task weight 0.05 with `attribute_weights: {timeofday: 0.0}`.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator
from torch import Tensor, nn

from drivemtl.config.loader import ConfigError
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
    attribute_weights: dict[str, float] = Field(
        default_factory=dict,
        description="attribute -> weight of its cross entropy in the task loss (default 1)",
    )

    @field_validator("attribute_weights")
    @classmethod
    def _non_negative(cls, weights: dict[str, float]) -> dict[str, float]:
        negative = {k: v for k, v in weights.items() if v < 0}
        if negative:
            raise ValueError(f"attribute weights must be >= 0, got {negative}")
        return weights


@HEAD_FAMILIES.register("global_pool")
class GlobalPoolFamily(HeadFamily):
    """A linear classifier per `task.attributes()` entry on globally pooled C5."""

    Options = GlobalPoolOptions
    kinds = ("image",)

    def __init__(self, task: Any, options: Any) -> None:
        super().__init__(task, options)
        unknown = sorted(set(options.attribute_weights) - set(task.attributes()))
        if unknown:
            raise ConfigError(
                f"model.tasks.{task.name}.head.attribute_weights: unknown attributes {unknown}; "
                f"known: {list(self.task.attributes())}"
            )

    def build(self, spec: FeatureSpec) -> nn.Module:
        """The classifier module."""
        return GlobalPoolClassifier(spec, self.task.attributes(), dropout=self.options.dropout)

    def loss(self, outputs: dict[str, Tensor], batch: Batch) -> Tensor:
        """Weighted sum over attributes of the CE of labelled samples whose value is known."""
        mask = self.task.labeled(batch)
        if not bool(mask.any()):
            return zero_loss(batch.images.device)
        targets = self.task.targets(batch)[mask]
        total = zero_loss(batch.images.device)
        for column, name in enumerate(self.task.attributes()):
            logits = outputs[name][mask.to(outputs[name].device)]
            weight = self.options.attribute_weights.get(name, 1.0)  # 0 keeps the graph
            total = total + weight * cross_entropy(logits, targets[:, column].to(logits.device))
        return total
