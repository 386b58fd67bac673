"""A collated batch: padded images and dense targets, per-sample instances, `labeled[task]` masks."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields

import torch
from torch import Tensor

from drivemtl.structures.bdd import IGNORE_INDEX
from drivemtl.structures.instances import Instances
from drivemtl.structures.sample import LaneLine, Sample, SampleMeta

# Dense fields of Sample with their channel count (0 = [H, W]), dtype and padding / missing value.
# Class maps travel as uint8 (ids < 255, 255 = ignore): 8x less to copy from loader workers than
# int64; losses widen them on the device (`tasks.base.require_target`).
DENSE_FIELDS: dict[str, tuple[int, torch.dtype, float]] = {
    "semantic": (0, torch.uint8, IGNORE_INDEX),
    "drivable": (0, torch.uint8, IGNORE_INDEX),
    "lanes": (3, torch.uint8, IGNORE_INDEX),
    "edges": (0, torch.uint8, IGNORE_INDEX),
    "depth": (0, torch.float32, 0.0),
    "normals": (3, torch.float32, 0.0),
    "flow": (2, torch.float32, 0.0),
    "flow_valid": (0, torch.bool, False),
}


@dataclass
class Batch:
    """B samples padded to one size (bottom / right padding, so coordinates are unchanged).

    images: [B, 3, H, W] float; image_sizes: each sample's (h, w) before padding. Dense targets are
    [B, H, W] or [B, C, H, W], filled with their ignore value where a sample lacks the label or
    where it is padding (class maps are uint8 with 255 = ignore); tags: [B, 3] (255 = unknown). instances and lane_lines are per-sample
    lists (None entries for unlabelled samples). labeled[task] is a [B] bool tensor saying which
    samples carry that task's labels. `references[t]` is the batch of every sample's t-th reference
    frame (clips of video tasks; empty for frames read alone).
    """

    images: Tensor
    image_sizes: list[tuple[int, int]]
    metas: list[SampleMeta]
    labeled: dict[str, Tensor]
    instances: list[Instances | None]
    lane_lines: list[list[LaneLine] | None]
    semantic: Tensor | None = None
    drivable: Tensor | None = None
    lanes: Tensor | None = None
    edges: Tensor | None = None
    depth: Tensor | None = None
    normals: Tensor | None = None
    flow: Tensor | None = None
    flow_valid: Tensor | None = None
    tags: Tensor | None = None
    references: list[Batch] = field(default_factory=list, repr=False)

    @property
    def reference(self) -> Batch | None:
        """The batch of first reference frames (None without clips)."""
        return self.references[0] if self.references else None

    @property
    def clip_length(self) -> int:
        """Frames per clip, key included (1 without clips)."""
        return 1 + len(self.references)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def is_labeled(self, task: str) -> Tensor:
        """[B] bool mask of the samples labelled for `task` (all False if no sample is)."""
        mask = self.labeled.get(task)
        if mask is None:
            return torch.zeros(len(self), dtype=torch.bool, device=self.images.device)
        return mask

    def to(self, device: torch.device | str) -> Batch:
        """Move every tensor (including instances and the reference batch) to `device`."""
        moved = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, Tensor):
                value = value.to(device)
            elif f.name == "labeled":
                value = {k: v.to(device) for k, v in value.items()}
            elif f.name == "instances":
                value = [None if inst is None else inst.to(device) for inst in value]
            elif f.name == "references":
                value = [ref.to(device) for ref in value]
            moved[f.name] = value
        return Batch(**moved)


def _padded_size(sizes: list[tuple[int, int]], size_divisor: int) -> tuple[int, int]:
    h = max(s[0] for s in sizes)
    w = max(s[1] for s in sizes)
    if size_divisor > 1:
        h = int(math.ceil(h / size_divisor) * size_divisor)
        w = int(math.ceil(w / size_divisor) * size_divisor)
    return h, w


def _stack_dense(samples: list[Sample], name: str, pad_hw: tuple[int, int]) -> Tensor | None:
    values = [getattr(s, name) for s in samples]
    if all(v is None for v in values):
        return None
    channels, dtype, fill = DENSE_FIELDS[name]
    shape = (len(samples), channels, *pad_hw) if channels else (len(samples), *pad_hw)
    out = torch.full(shape, fill, dtype=dtype)
    for i, value in enumerate(values):
        if value is not None:
            h, w = value.shape[-2:]
            out[i, ..., :h, :w] = value.to(dtype)
    return out


def _collate_references(samples: list[Sample], size_divisor: int) -> list[Batch]:
    """One batch per reference position; every sample must carry as many reference frames."""
    counts = {len(s.references) for s in samples}
    if len(counts) > 1:
        by_count = {c: [s.meta.name for s in samples if len(s.references) == c] for c in counts}
        if 0 in by_count:
            raise ValueError(
                f"video batch mixes frames without a reference frame: {by_count[0][:3]}"
            )
        raise ValueError(f"clips of different lengths in one batch: {by_count}")
    count = counts.pop()
    return [collate([s.references[t] for s in samples], size_divisor) for t in range(count)]


def collate(samples: list[Sample], size_divisor: int = 32) -> Batch:
    """Stack samples into a Batch; pads to a multiple of `size_divisor` (the FPN's top stride)."""
    if not samples:
        raise ValueError("collate needs at least one sample")
    for sample in samples:
        sample.check()
    sizes = [s.size for s in samples]
    pad_hw = _padded_size(sizes, size_divisor)
    images = torch.zeros((len(samples), 3, *pad_hw), dtype=samples[0].image.dtype)
    for i, sample in enumerate(samples):
        h, w = sample.size
        images[i, :, :h, :w] = sample.image
    task_names = sorted(set().union(*(s.tasks for s in samples)))
    labeled = {t: torch.tensor([s.has(t) for s in samples], dtype=torch.bool) for t in task_names}
    tags = None
    if any(s.tags is not None for s in samples):
        tags = torch.full((len(samples), 3), IGNORE_INDEX, dtype=torch.int64)
        for i, sample in enumerate(samples):
            if sample.tags is not None:
                tags[i] = sample.tags
    dense = {name: _stack_dense(samples, name, pad_hw) for name in DENSE_FIELDS}
    references = _collate_references(samples, size_divisor)
    return Batch(
        images=images,
        image_sizes=sizes,
        metas=[s.meta for s in samples],
        labeled=labeled,
        instances=[s.instances for s in samples],
        lane_lines=[s.lane_lines for s in samples],
        tags=tags,
        references=references,
        **dense,
    )
