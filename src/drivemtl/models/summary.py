"""Parameters and MACs per stage (shared stages vs each task head) of a MultiTaskNet.

MACs are counted by `torch.utils.flop_counter.FlopCounterMode` during one inference forward pass
on a blank image (MACs = FLOPs / 2; convolutions and matrix products, which dominate; resampling
and RoIAlign gathers are not counted). The single-task column adds the shared extractor to each
head, so `ratio` reads the cost of the unified network over that of separate single-task networks.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils.flop_counter import FlopCounterMode

from drivemtl.models.multitask import MultiTaskNet
from drivemtl.structures.batch import Batch
from drivemtl.structures.instances import Instances
from drivemtl.structures.sample import SampleMeta


@dataclass(frozen=True)
class ComponentCost:
    """Parameters and multiply-accumulates of one component for one input image."""

    name: str
    params: int
    macs: int


@dataclass(frozen=True)
class ModelSummary:
    """Costs of the shared stages (backbone, neck, adapters, group encoders, interaction and
    exchange blocks) and of each task head at `input_size` (H, W)."""

    input_size: tuple[int, int]
    shared: list[ComponentCost]
    heads: list[ComponentCost]

    @property
    def shared_params(self) -> int:
        """Parameters of the shared stages."""
        return sum(c.params for c in self.shared)

    @property
    def shared_macs(self) -> int:
        """MACs of the shared stages."""
        return sum(c.macs for c in self.shared)

    @property
    def total_params(self) -> int:
        """Parameters of the whole network."""
        return self.shared_params + sum(c.params for c in self.heads)

    @property
    def total_macs(self) -> int:
        """MACs of one forward pass through every head."""
        return self.shared_macs + sum(c.macs for c in self.heads)

    @property
    def single_task_macs(self) -> int:
        """MACs of one single-task network (shared extractor + one head) per head, summed."""
        return sum(self.shared_macs + c.macs for c in self.heads)

    @property
    def single_task_params(self) -> int:
        """Parameters of one single-task network per head, summed."""
        return sum(self.shared_params + c.params for c in self.heads)

    def ratio(self) -> float:
        """Unified MACs / sum of single-task MACs (VTDNet reports about 0.2 for its ten tasks)."""
        return self.total_macs / max(self.single_task_macs, 1)


def blank_batch(input_size: tuple[int, int], device: torch.device | str = "cpu") -> Batch:
    """A one-image batch of zeros, unlabelled, to trace costs."""
    height, width = input_size
    meta = SampleMeta(name="summary", image_set="summary", orig_size=(height, width))
    return Batch(
        images=torch.zeros((1, 3, height, width), device=device),
        image_sizes=[(height, width)],
        metas=[meta],
        labeled={},
        instances=[Instances.empty()],
        lane_lines=[None],
    )


def _params(model: torch.nn.Module, prefix: str) -> int:
    return sum(p.numel() for n, p in model.named_parameters() if n.startswith(prefix + "."))


def _module_macs(counts: dict[str, dict], base: str) -> int:
    """MACs of module `base` and everything below it, counted once.

    FlopCounterMode records a module only when its `forward` runs; a head whose decoder and
    predictor are called as methods appears through its sub-modules, whose outermost entries
    are summed (each entry already includes its own children).
    """
    if base in counts:
        return int(sum(counts[base].values())) // 2
    inside = [k for k in counts if k.startswith(base + ".")]
    outermost = [k for k in inside if not any(k != o and k.startswith(o + ".") for o in inside)]
    return int(sum(sum(counts[k].values()) for k in outermost)) // 2


def summarize(model: MultiTaskNet, input_size: tuple[int, int] = (720, 1280)) -> ModelSummary:
    """Count parameters and MACs of every stage for one image of `input_size`.

    The model runs in eval mode under no_grad; its mode is restored afterwards. RoI heads are
    counted on the proposals / detections the current weights produce.
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(blank_batch(input_size, device), targets=False)
    finally:
        model.train(was_training)
    counts = counter.get_flop_counts()
    root = type(model).__name__
    shared, heads, seen = [], [], set()
    for stage in model.stage_list:
        if stage.path in seen:
            continue
        seen.add(stage.path)
        cost = ComponentCost(
            stage.path, _params(model, stage.path), _module_macs(counts, f"{root}.{stage.path}")
        )
        (heads if stage.kind in ("decoder", "predictor") else shared).append(cost)
    return ModelSummary(input_size, shared, heads)


def format_summary(summary: ModelSummary) -> str:
    """A plain-text table: component, parameters (M), GMACs, and the unified / single-task ratio."""
    h, w = summary.input_size
    lines = [f"input {h}x{w}", f"{'component':<22}{'params (M)':>12}{'GMACs':>12}"]
    for c in [*summary.shared, *summary.heads]:
        lines.append(f"{c.name:<22}{c.params / 1e6:>12.3f}{c.macs / 1e9:>12.3f}")
    lines.append(
        f"{'shared stages':<22}{summary.shared_params / 1e6:>12.3f}"
        f"{summary.shared_macs / 1e9:>12.3f}"
    )
    lines.append(
        f"{'total (unified)':<22}{summary.total_params / 1e6:>12.3f}{summary.total_macs / 1e9:>12.3f}"
    )
    lines.append(
        f"{'sum of single-task':<22}{summary.single_task_params / 1e6:>12.3f}"
        f"{summary.single_task_macs / 1e9:>12.3f}"
    )
    lines.append(f"unified / single-task MACs ratio: {summary.ratio():.3f}")
    return "\n".join(lines)
