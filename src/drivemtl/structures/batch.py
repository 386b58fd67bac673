"""A collated batch: padded images and dense targets, per-sample instances, `labeled[task]` masks."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any

import torch
from torch import Tensor

from drivemtl.structures.fields import FIELDS, DataField, FieldAccess
from drivemtl.structures.instances import Instances
from drivemtl.structures.sample import LaneLine, Sample, SampleMeta


@dataclass
class Batch(FieldAccess):
    """B samples padded to one size (bottom / right padding, so coordinates are unchanged).

    images: [B, 3, H, W] float; image_sizes: each sample's (h, w) before padding. Dense targets are
    [B, H, W] or [B, C, H, W], filled with their ignore value where a sample lacks the label or
    where it is padding (class maps are uint8 with 255 = ignore); tags: [B, 3] (255 = unknown).
    instances and lane_lines are per-sample lists (None entries for unlabelled samples). labeled[task] is a [B] bool tensor saying which
    samples carry that task's labels. Plug-in tasks' fields (`structures.fields`) are in `extras`,
    collated by their declarations like the built-in ones. `references[t]` is the batch of every
    sample's t-th reference frame (clips of video tasks; empty for frames read alone).
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
    extras: dict[str, Any] = field(default_factory=dict)
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
            elif f.name == "extras":
                value = {k: _move(v, device) for k, v in value.items()}
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


def _move(value: Any, device: torch.device | str) -> Any:
    """A tensor (or per-sample list of tensors / objects with `.to`) on `device`."""
    if isinstance(value, list):
        return [v if v is None or not hasattr(v, "to") else v.to(device) for v in value]
    return value.to(device) if hasattr(value, "to") else value


def _stack(samples: list[Sample], spec: DataField, pad_hw: tuple[int, int]) -> Tensor | None:
    """The [B, ...] tensor of a dense or sequence field, `spec.ignore` where absent or padded."""
    values = [s.get(spec.name) for s in samples]
    if all(v is None for v in values):
        return None
    if spec.kind == "sequence":
        shape: tuple[int, ...] = (len(samples), spec.channels)
    else:
        shape = (len(samples), *spec.shape(*pad_hw))
    out = torch.full(shape, spec.ignore, dtype=spec.dtype)
    for i, value in enumerate(values):
        if value is None:
            continue
        if spec.kind == "sequence":
            out[i] = value.to(spec.dtype)
        else:
            h, w = value.shape[-2:]
            out[i, ..., :h, :w] = value.to(spec.dtype)
    return out


def _collate_fields(samples: list[Sample], pad_hw: tuple[int, int]) -> dict[str, Any]:
    """Every declared field: dense and sequence fields stacked (None when no sample carries
    them), instances and lines listed per sample (None entries where a sample lacks them)."""
    out: dict[str, Any] = {}
    for spec in FIELDS.entries().values():
        if spec.kind in ("dense", "sequence"):
            out[spec.name] = _stack(samples, spec, pad_hw)
        else:
            out[spec.name] = [s.get(spec.name) for s in samples]
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
    batch = Batch(
        images=images,
        image_sizes=sizes,
        metas=[s.meta for s in samples],
        labeled=labeled,
        instances=[],
        lane_lines=[],
        references=_collate_references(samples, size_divisor),
    )
    for name, value in _collate_fields(samples, pad_hw).items():
        batch.set(name, value)
    return batch
