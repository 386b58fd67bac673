"""The open, typed feature container that every stage of the network reads and writes.

Streams follow VTDNet's hierarchy: image features (C5), pixel features (FPN levels), group
features (a shared map per task group, e.g. the segmentation group's stride-4 aggregation), the
object stream (proposals / sampled RoIs / detections, explicit and declared by the heads that
need it), the reference stream (the features of a clip's reference frame, for video losses), and
task features (each decoder's output, before its predictor). A stage declares the
streams it needs, provides and modifies by these names (see `stream_names`); `extras` holds
anything else a plug-in adds (e.g. language embeddings), keyed by the plug-in.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

IMAGE = "image"
BACKBONE = "backbone"
PIXEL = "pixel"
OBJECTS = "objects"
REFERENCE = "reference"


def group_stream(group: str) -> str:
    """Stream name of a task group's shared feature."""
    return f"group:{group}"


def task_stream(task: str) -> str:
    """Stream name of a task decoder's features."""
    return f"task:{task}"


def task_group_key(group: str, task: str) -> str:
    """Key in `Features.groups` of one task's own version of its group's map (written by an
    interaction block such as VTDNet's Intra-IB), e.g. ``segmentation/semantic``."""
    return f"{group}/{task}"


@dataclass
class ObjectFeatures:
    """The object (RoI) stream: proposals, sampled RoIs in training, detections at inference.

    proposals: per image [Ki, 4] boxes in padded-input pixels (detached). During training,
    `rois` are the sampled RoIs per image, `roi_labels` their class (num_classes = background),
    `roi_gt_index` the index of the matched ground-truth instance (-1 for background).
    At inference `detections` are the final boxes per image ([Ni, 4]) with `det_classes` and
    `det_scores`, which the mask and keypoint heads refine, and `det_sources` the index of each
    detection's source box among the box head's input boxes (the proposals; through the box
    decoding and NMS), so a head finds the object vector of the box a detection came from.
    `embeddings` are optional per-object feature vectors (per image [Ri, C]) that object-level
    interaction blocks read and update; `task_embeddings` maps a task to its own per-image
    vectors (VTDNet's Intra-IB gives every task of the localization group its own), aligned
    with `embedding_boxes` (the boxes the vectors were pooled from: the box head's input, i.e.
    the sampled RoIs in training and the proposals at inference; a provider without a separate
    box stage, such as Sparse R-CNN, gives its detections).
    """

    proposals: list[Tensor]
    rois: list[Tensor] | None = None
    roi_labels: list[Tensor] | None = None
    roi_gt_index: list[Tensor] | None = None
    detections: list[Tensor] | None = None
    det_classes: list[Tensor] | None = None
    det_scores: list[Tensor] | None = None
    det_sources: list[Tensor] | None = None
    embeddings: list[Tensor] | None = None
    embedding_boxes: list[Tensor] | None = None
    task_embeddings: dict[str, list[Tensor]] = field(default_factory=dict)

    def vectors(self, task: str) -> list[Tensor] | None:
        """`task`'s own object vectors when an interaction block wrote them, else `embeddings`."""
        return self.task_embeddings.get(task, self.embeddings)

    def task_vectors_at(self, task: str, sources: list[Tensor]) -> Tensor | None:
        """[R, C] rows of `task`'s own vectors (written by an interaction block; None when no
        block wrote them), `sources[i]` indexing image i's vectors; images concatenated.

        A RoI head reads the vectors of its boxes with it: the positive sampled RoIs' indices in
        training, the detections' `det_sources` at inference.
        """
        vectors = self.task_embeddings.get(task)
        if vectors is None:
            return None
        if len(vectors) != len(sources):
            raise ValueError(f"{task}: object vectors of {len(vectors)} images, boxes of "
                             f"{len(sources)}")  # fmt: skip
        rows = []
        for i, (v, index) in enumerate(zip(vectors, sources, strict=True)):
            if index.numel() and int(index.max()) >= len(v):
                raise IndexError(
                    f"{task}: image {i} has {len(v)} object vectors, a box asks for row "
                    f"{int(index.max())} (the vectors follow the box head's input boxes)"
                )
            rows.append(v[index])
        return torch.cat(rows)


@dataclass
class Features:
    """Every stream of one batch of images (see the module docstring).

    image: C5 [B, C, H/32, W/32]; pixel: FPN maps (finest first) with their `strides`; backbone:
    C2..C5; input_size: padded (H, W) of the batch; image_sizes: each image's (h, w) inside the
    padding; groups: group name -> shared map; objects: the object stream once a stage has
    provided it; tasks: task name -> decoder features; extras: plug-in name -> anything.
    reference: on clips, when a stage declares it needs the `reference` stream (at inference: a
    stage whose module sets `reference_at_inference`, e.g. a flow head), the features of the
    batch's reference frames (backbone + neck, and in training the object stream's proposals
    computed without gradient); None otherwise.
    """

    image: Tensor
    pixel: list[Tensor]
    strides: tuple[int, ...]
    input_size: tuple[int, int]
    image_sizes: list[tuple[int, int]]
    backbone: list[Tensor] = field(default_factory=list)
    groups: dict[str, Tensor] = field(default_factory=dict)
    objects: ObjectFeatures | None = None
    tasks: dict[str, Any] = field(default_factory=dict)
    extras: dict[str, Any] = field(default_factory=dict)
    reference: Features | None = None

    def levels(self, strides: tuple[int, ...]) -> list[Tensor]:
        """The pixel feature maps with the given strides (e.g. (4, 8, 16, 32) for P2..P5)."""
        missing = [s for s in strides if s not in self.strides]
        if missing:
            raise ValueError(f"no pixel features with stride {missing}; have {self.strides}")
        return [self.pixel[self.strides.index(s)] for s in strides]

    def level_index(self, name: str) -> int:
        """Index in `pixel` of a named level such as 'p5' (stride 2**5)."""
        if len(name) < 2 or name[0] != "p" or not name[1:].isdigit():
            raise ValueError(f"pixel level names look like 'p2'..'p6', got {name!r}")
        stride = 2 ** int(name[1:])
        if stride not in self.strides:
            have = ", ".join(f"p{s.bit_length() - 1}" for s in self.strides)
            raise ValueError(f"no pixel level {name!r}; have {have}")
        return self.strides.index(stride)

    def group_map(self, group: str, task: str | None = None) -> Tensor:
        """The map a decoder of `task` reads: the task's own map when an interaction block
        (VTDNet's Intra-IB) provided one (`task_group_key`), else the group's shared map."""
        if task is not None:
            own = self.groups.get(task_group_key(group, task))
            if own is not None:
                return own
        return self.groups[group]

    def require_objects(self, who: str) -> ObjectFeatures:
        """The object stream, or a RuntimeError naming the stage that needed it."""
        if self.objects is None:
            raise RuntimeError(f"{who} needs the object stream, but no stage has provided it")
        return self.objects


@dataclass(frozen=True)
class FeatureSpec:
    """Channel counts and strides of the streams a stage will receive (to size its layers).

    `groups` gives the channels of each group feature that a group encoder provides;
    `object_vectors` the width of each task's own object vectors that an interaction block
    writes (`ObjectFeatures.task_embeddings`), so that the task's RoI head sizes the layer that
    reads them.
    """

    image_channels: int
    pixel_channels: int
    strides: tuple[int, ...]
    groups: dict[str, int] = field(default_factory=dict)
    object_vectors: dict[str, int] = field(default_factory=dict)
