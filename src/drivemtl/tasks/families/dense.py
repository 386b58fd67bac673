"""The per-pixel decoder family: a Semantic-FPN decoder trained with the task's per-pixel loss.

Serves every dense task (semantic, drivable, lanes, depth, normals, edges). The decoder reads the
task group's shared map when a group encoder provides one (`use_group`), else aggregates the
pixel levels itself. Its criterion is the task's per-pixel loss (`task.pixel_loss`: cross entropy
with the ignore label, berHu on inverse depth, 1 - cos, balanced BCE ...), which is what a
per-pixel prediction is trained with; set-prediction families bring a criterion of their own.
`conv: deform` selects VTDNet's modulated deformable convolutions (+ GN) for the decoder's 3x3
convs; `plain` (the default) keeps ordinary ones.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from torch import Tensor, nn

from drivemtl.models.features import FeatureSpec
from drivemtl.models.heads.dense_decoder import SemanticFPNDecoder
from drivemtl.structures.batch import Batch
from drivemtl.tasks.families.base import HEAD_FAMILIES, HeadFamily, HeadOptions


class DenseOptions(HeadOptions):
    """Options of the Semantic-FPN decoder."""

    type: str = "semantic_fpn"
    channels: int = Field(128, gt=0, description="width of the aggregated stride-4 features")
    strides: tuple[int, ...] = (4, 8, 16, 32)
    shared_convs: int = Field(
        0, ge=0, description="conv+GN+ReLU layers shared by every output branch (task features)"
    )
    branch_convs: int = Field(0, ge=0, description="extra conv+GN+ReLU layers before the output")
    conv: Literal["plain", "deform"] = Field(
        "plain", description="3x3 convs: plain, or modulated deformable (DCNv2) as in VTDNet"
    )
    use_group: bool = Field(
        True, description="read the task group's shared map when a group encoder provides one"
    )


@HEAD_FAMILIES.register("semantic_fpn")
class SemanticFPNFamily(HeadFamily):
    """Semantic-FPN decoder with one output branch per `task.branches()` entry."""

    Options = DenseOptions
    kinds = ("dense",)

    def build(self, spec: FeatureSpec) -> nn.Module:
        """The decoder, on the group's shared map when one exists and `use_group` is set."""
        opts = self.options
        group = self.task.group if opts.use_group and self.task.group in spec.groups else None
        decoder = SemanticFPNDecoder(
            spec,
            outputs=self.task.branches(),
            channels=opts.channels,
            strides=tuple(opts.strides),
            branch_convs=opts.branch_convs,
            group=group,
            shared_convs=opts.shared_convs,
            conv=opts.conv,
        )
        decoder.task = self.task.name  # reads its own map when an Intra-IB provides one
        return decoder

    def loss(self, outputs: dict[str, Tensor], batch: Batch) -> Tensor:
        """The task's per-pixel loss on the branch maps."""
        return self.task.pixel_loss(outputs, batch)
