"""VTDNet's feature interaction blocks (Liu et al., ICCV 2023, Sec. 4.2 and Appendix G.2).

Intra-group Interaction Block (`vtd_intra`), per task group g with T enabled tasks: T linear
layers give task tokens X_g1..X_gT [N, C'] of the group's features, concatenated along channels
to [N, T*C'] as in the paper, M pre-LN transformer blocks (Eq. 2), split back per task. Each
task's part goes through a zero-initialised linear layer back to the input width and is added
to the input, so an untrained block leaves every task's features equal to the group's.
- window mode (the segmentation group): tokens are the pixels of the group's shared map
  (`group:<g>`, e.g. the stride-4 Semantic-FPN aggregation), attended by Swin window and
  shifted-window attention (blocks alternate shift 0 and window // 2; any map size is padded
  to whole windows). Task t's map goes to `features.groups["<g>/<t>"]`, which the group's dense
  decoders read through `Features.group_map`.
- objects mode (the localization group): tokens are the object vectors of each image (the
  object stream's boxes RoIAligned from the pixel levels and average-pooled, stored once in
  `objects.embeddings`), plain multi-head attention among the objects of one image. The boxes
  are the box head's input (`object_boxes`: sampled RoIs in training, proposals at inference),
  since the blocks run between the detector's proposals and its box head. Task t's vectors go
  to `objects.task_embeddings[t]` (read with `ObjectFeatures.vectors(t)`); task t's RoI head
  adds them to its pooled RoI features (`object_vectors` names the tasks and widths, so the
  heads size the layer that reads them).

Cross-group Interaction Block (`vtd_cross`), after the Intra-IBs, both directions between a
pixel group (segmentation) and an object group (localization): the pixel group's task maps,
concatenated and average-pooled x8, and the object group's task vectors, concatenated, are
projected to C'' tokens; objects query the pixels of their image (cells in the batch padding
excluded) and pixels query the objects of their image with pre-LN cross attention + FFN (Eq. 3). Each direction's change is brought
back to the input width by a zero-initialised linear layer and added: per object, and, bilinearly
upsampled, at the full resolution of every task map.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from drivemtl.models.features import (
    OBJECTS,
    PIXEL,
    Features,
    ObjectFeatures,
    group_stream,
    task_group_key,
)
from drivemtl.models.interactions import INTERACTIONS, InteractionOptions
from drivemtl.models.interactions.attention import (
    CrossAttentionBlock,
    SelfAttentionBlock,
    pad_sets,
    unpad_sets,
)
from drivemtl.models.stage import FeatureStage, StageContext
from drivemtl.ops.roi_align import MultiScaleRoIAlign
from drivemtl.ops.window_attention import SwinBlock

# The groups whose block kind the paper fixes (any other group names its `mode`).
DEFAULT_MODES = {"segmentation": "window", "localization": "objects"}


class ObjectPoolOptions(InteractionOptions):
    """How object vectors are made from the object stream's boxes (Mask R-CNN's RoI pooler)."""

    pooler_resolution: int = Field(7, gt=0, description="RoIAlign output size before averaging")
    pooler_strides: tuple[int, ...] = Field(
        (4, 8, 16, 32), description="pixel levels the boxes are pooled from"
    )


class VTDIntraOptions(ObjectPoolOptions):
    """Options of an Intra-IB: one task group and the transformer's sizes."""

    groups: list[str] = Field(
        min_length=1, max_length=1, description="the task group, e.g. [segmentation]"
    )
    mode: Literal["auto", "window", "objects"] = Field(
        "auto",
        description="window attention on the group map or attention over object vectors; auto: "
        "window for segmentation, objects for localization",
    )
    channels: int | None = Field(
        32,
        gt=0,
        description="C', the width of each task's tokens; None: the input width (not given in "
        "the paper; 32 keeps the block near the cost of two of a decoder's 3x3 convs)",
    )
    heads: int = Field(4, gt=0, description="attention heads (not given in the paper)")
    depth: int = Field(2, gt=0, description="M, the number of transformer blocks (paper: 2)")
    window_size: int = Field(7, gt=0, description="window of the window mode (Swin's 7)")
    mlp_ratio: float = Field(4.0, gt=0, description="FFN hidden width / token width")


class VTDCrossOptions(ObjectPoolOptions):
    """Options of a Cross-IB: the pixel group, the object group and the exchange's sizes."""

    groups: list[str] = Field(
        ["segmentation", "localization"],
        min_length=2,
        max_length=2,
        description="[pixel group, object group]",
    )
    channels: int = Field(256, gt=0, description="C'', the width of the exchanged tokens")
    heads: int = Field(8, gt=0, description="attention heads (not given in the paper)")
    mlp_ratio: float = Field(4.0, gt=0, description="FFN hidden width / token width")
    downsample: int = Field(8, gt=0, description="average-pooling factor of the pixel tokens")


def zero_linear(in_features: int, out_features: int) -> nn.Linear:
    """A linear layer with zero weight and bias: its residual branch starts as the identity."""
    layer = nn.Linear(in_features, out_features)
    nn.init.zeros_(layer.weight)
    nn.init.zeros_(layer.bias)
    return layer


def object_boxes(objects: ObjectFeatures) -> list[Tensor]:
    """The boxes object vectors are pooled from: the box head's input, i.e. the sampled RoIs in
    training and, at inference, the proposals (the two-stage detector's box head runs after the
    blocks and its detections keep their source proposal, `det_sources`); a provider whose
    object stream already holds its detections (Sparse R-CNN) gives those."""
    if objects.rois is not None:
        return objects.rois
    if objects.detections is not None:
        return objects.detections
    return objects.proposals


class ObjectVectors(nn.Module):
    """Provides `objects.embeddings`: each box RoIAligned from the pixel levels and averaged.

    Runs once per forward: a later block finds the vectors there and reuses them.
    """

    def __init__(self, resolution: int, strides: tuple[int, ...]) -> None:
        super().__init__()
        self.strides = tuple(strides)
        self.pooler = MultiScaleRoIAlign(resolution, sampling_ratio=2)

    def forward(self, features: Features, objects: ObjectFeatures) -> list[Tensor]:
        """Per image [Ri, C] vectors of `object_boxes(objects)`."""
        if objects.embeddings is None:
            boxes = object_boxes(objects)
            pooled = self.pooler(features.levels(self.strides), self.strides, boxes)
            vectors = pooled.mean(dim=(2, 3))
            objects.embeddings = list(vectors.split([len(b) for b in boxes]))
            objects.embedding_boxes = list(boxes)
        return objects.embeddings


class TaskTokens(nn.Module):
    """The per-task input layers L_g1..L_gT and zero-initialised output layers of an Intra-IB."""

    def __init__(self, tasks: list[str], in_channels: int, channels: int) -> None:
        super().__init__()
        self.tasks = list(tasks)
        self.channels = channels
        self.inputs = nn.ModuleDict({t: nn.Linear(in_channels, channels) for t in self.tasks})
        self.outputs = nn.ModuleDict({t: zero_linear(channels, in_channels) for t in self.tasks})

    def tokens(self, x: Tensor) -> Tensor:
        """Channels-last input [..., C] -> concatenated task tokens [..., T*C']."""
        return torch.cat([self.inputs[t](x) for t in self.tasks], dim=-1)

    def split(self, x: Tensor, tokens: Tensor) -> dict[str, Tensor]:
        """Task t's output: input + output_t(its C' slice of `tokens`), channels-last."""
        parts = tokens.split(self.channels, dim=-1)
        return {t: x + self.outputs[t](p) for t, p in zip(self.tasks, parts, strict=True)}


class WindowIntraIB(FeatureStage):
    """Intra-IB on a group's map with (shifted) window attention (see the module docstring)."""

    def __init__(
        self,
        group: str,
        tasks: list[str],
        in_channels: int,
        options: VTDIntraOptions,
    ) -> None:
        super().__init__()
        self.group = group
        self.needs = (group_stream(group),)
        self.modifies = (group_stream(group),)
        channels = options.channels or in_channels
        self.task_tokens = TaskTokens(tasks, in_channels, channels)
        dim, ws = channels * len(tasks), options.window_size
        _check_heads(dim, options.heads, "vtd_intra")
        self.blocks = nn.ModuleList(
            SwinBlock(
                dim, options.heads, ws, shift=(ws // 2) * (i % 2), mlp_ratio=options.mlp_ratio
            )
            for i in range(options.depth)
        )

    def forward(self, features: Features) -> None:
        """Write each task's map [B, C, H, W] to `features.groups["<group>/<task>"]`."""
        x = features.groups[self.group].permute(0, 2, 3, 1)  # [B, H, W, C]
        tokens = self.task_tokens.tokens(x)
        for block in self.blocks:
            tokens = block(tokens)
        for task, out in self.task_tokens.split(x, tokens).items():
            features.groups[task_group_key(self.group, task)] = out.permute(0, 3, 1, 2)


class ObjectIntraIB(FeatureStage):
    """Intra-IB over the object vectors of each image (see the module docstring)."""

    needs = (PIXEL, OBJECTS)
    modifies = (OBJECTS,)

    def __init__(self, tasks: list[str], in_channels: int, options: VTDIntraOptions) -> None:
        super().__init__()
        channels = options.channels or in_channels
        self.object_vectors = {t: in_channels for t in tasks}  # what the RoI heads read
        self.vectors = ObjectVectors(options.pooler_resolution, options.pooler_strides)
        self.task_tokens = TaskTokens(tasks, in_channels, channels)
        dim = channels * len(tasks)
        _check_heads(dim, options.heads, "vtd_intra")
        self.blocks = nn.ModuleList(
            SelfAttentionBlock(dim, options.heads, options.mlp_ratio) for _ in range(options.depth)
        )

    def forward(self, features: Features) -> None:
        """Write each task's per-image vectors to `objects.task_embeddings[task]`."""
        objects = features.require_objects("vtd_intra (objects)")
        vectors = self.vectors(features, objects)
        sizes = [len(v) for v in vectors]
        flat = torch.cat(vectors)
        padded, valid = pad_sets(list(self.task_tokens.tokens(flat).split(sizes)), flat)
        for block in self.blocks:
            padded = block(padded, valid)
        tokens = torch.cat(unpad_sets(padded, sizes))
        for task, out in self.task_tokens.split(flat, tokens).items():
            objects.task_embeddings[task] = list(out.split(sizes))


class CrossIB(FeatureStage):
    """Cross-IB between a pixel group's task maps and an object group's task vectors."""

    def __init__(
        self,
        pixel_group: str,
        pixel_tasks: list[str],
        pixel_channels: int,
        object_tasks: list[str],
        object_channels: int,
        options: VTDCrossOptions,
    ) -> None:
        super().__init__()
        self.pixel_group = pixel_group
        self.pixel_tasks, self.object_tasks = list(pixel_tasks), list(object_tasks)
        self.pixel_channels, self.object_channels = pixel_channels, object_channels
        self.object_vectors = {t: object_channels for t in object_tasks}
        self.downsample = options.downsample
        self.needs = (group_stream(pixel_group), PIXEL, OBJECTS)
        self.modifies = (group_stream(pixel_group), OBJECTS)
        c = options.channels
        wide_p, wide_o = pixel_channels * len(pixel_tasks), object_channels * len(object_tasks)
        _check_heads(c, options.heads, "vtd_cross")
        self.vectors = ObjectVectors(options.pooler_resolution, options.pooler_strides)
        self.pixel_in, self.object_in = nn.Linear(wide_p, c), nn.Linear(wide_o, c)
        self.objects_from_pixels = CrossAttentionBlock(c, options.heads, options.mlp_ratio)
        self.pixels_from_objects = CrossAttentionBlock(c, options.heads, options.mlp_ratio)
        self.pixel_out, self.object_out = zero_linear(c, wide_p), zero_linear(c, wide_o)

    def _pixel_maps(self, features: Features) -> Tensor:
        """The pixel group's task maps (Intra-IB outputs or the shared map), concatenated."""
        maps = [features.group_map(self.pixel_group, t) for t in self.pixel_tasks]
        return torch.cat(maps, dim=1)

    def _object_vectors(self, features: Features, objects: ObjectFeatures) -> list[Tensor]:
        """Per image, the object group's task vectors concatenated: [Ri, T*C]."""
        self.vectors(features, objects)
        per_task = [objects.vectors(t) for t in self.object_tasks]
        return [torch.cat(parts, dim=1) for parts in zip(*per_task, strict=True)]

    def forward(self, features: Features) -> None:
        """Update the pixel group's task maps and the object group's task vectors in place."""
        objects = features.require_objects("vtd_cross")
        maps = self._pixel_maps(features)
        small = F.avg_pool2d(maps, self.downsample, ceil_mode=True)  # [B, T*C, h, w]
        pixels = self.pixel_in(small.flatten(2).transpose(1, 2))  # [B, hw, C'']
        vectors = self._object_vectors(features, objects)
        sizes = [len(v) for v in vectors]
        tokens, valid = pad_sets([self.object_in(v) for v in vectors], pixels)
        inside = pixel_cells_inside(features, maps.shape[-2:], small.shape[-2:], self.downsample)
        new_objects = self.objects_from_pixels(tokens, pixels, inside) - tokens
        new_pixels = self.pixels_from_objects(pixels, tokens, valid) - pixels
        self._add_to_maps(features, maps, self.pixel_out(new_pixels), small.shape[-2:])
        self._add_to_objects(objects, vectors, unpad_sets(self.object_out(new_objects), sizes))

    def _add_to_maps(
        self, features: Features, maps: Tensor, delta: Tensor, size: tuple[int, int]
    ) -> None:
        """Upsample the pixel change [B, hw, T*C] to the maps' size; add it to each task map."""
        b = delta.shape[0]
        grid = delta.transpose(1, 2).reshape(b, -1, *size)
        grid = F.interpolate(grid, size=maps.shape[-2:], mode="bilinear", align_corners=False)
        updated = (maps + grid).split(self.pixel_channels, dim=1)
        for task, out in zip(self.pixel_tasks, updated, strict=True):
            features.groups[task_group_key(self.pixel_group, task)] = out

    def _add_to_objects(
        self, objects: ObjectFeatures, vectors: list[Tensor], deltas: list[Tensor]
    ) -> None:
        """Add each object's change to its task vectors (`objects.task_embeddings`)."""
        updated = [
            (v + d).split(self.object_channels, dim=1) for v, d in zip(vectors, deltas, strict=True)
        ]
        for k, task in enumerate(self.object_tasks):
            objects.task_embeddings[task] = [parts[k] for parts in updated]


def pixel_cells_inside(
    features: Features, map_size: tuple[int, int], size: tuple[int, int], factor: int
) -> Tensor:
    """[B, h*w] mask of the pooled cells that start inside each image (not in batch padding):
    objects attend to those only. `map_size` is the full-resolution map's (H, W)."""
    stride_y = features.input_size[0] / map_size[0] * factor
    stride_x = features.input_size[1] / map_size[1] * factor
    device = features.image.device
    rows = torch.arange(size[0], device=device) * stride_y
    cols = torch.arange(size[1], device=device) * stride_x
    masks = [(rows[:, None] < h) & (cols[None, :] < w) for h, w in features.image_sizes]
    return torch.stack(masks).flatten(1)


def _check_heads(dim: int, heads: int, where: str) -> None:
    if dim % heads:
        raise ValueError(f"{where}: token width {dim} is not divisible by heads={heads}")


def _group_tasks(context: StageContext, group: str, where: str) -> list[str]:
    """The enabled tasks of `group`, or a ValueError naming the block."""
    tasks = context.tasks_of(group)
    if not tasks:
        have = sorted(set(context.task_groups.values()))
        raise ValueError(f"{where}: no enabled task is in group {group!r} (groups: {have})")
    return tasks


def _group_channels(context: StageContext, group: str, where: str) -> int:
    """Channels of a group encoder's map, or a ValueError when no encoder provides it."""
    if group not in context.spec.groups:
        raise ValueError(
            f"{where}: group {group!r} has no group encoder (model.groups: "
            f"{sorted(context.spec.groups) or 'none'}); its dense decoders must share a map"
        )
    return context.spec.groups[group]


@INTERACTIONS.register("vtd_intra", options=VTDIntraOptions)
def vtd_intra(options: VTDIntraOptions, context: StageContext) -> FeatureStage:
    """VTDNet's Intra-IB for one task group (window mode or objects mode)."""
    group = options.groups[0]
    where = f"{context.name or 'interaction'} (vtd_intra)"
    mode = DEFAULT_MODES.get(group) if options.mode == "auto" else options.mode
    if mode is None:
        raise ValueError(
            f"{where}: group {group!r} has no default block (VTDNet uses none for "
            "classification); set mode: window or objects"
        )
    tasks = _group_tasks(context, group, where)
    if mode == "window":
        return WindowIntraIB(group, tasks, _group_channels(context, group, where), options)
    return ObjectIntraIB(tasks, context.spec.pixel_channels, options)


@INTERACTIONS.register("vtd_cross", options=VTDCrossOptions)
def vtd_cross(options: VTDCrossOptions, context: StageContext) -> CrossIB:
    """VTDNet's Cross-IB between a pixel group and an object group."""
    pixel_group, object_group = options.groups
    where = f"{context.name or 'interaction'} (vtd_cross)"
    return CrossIB(
        pixel_group,
        _group_tasks(context, pixel_group, where),
        _group_channels(context, pixel_group, where),
        _group_tasks(context, object_group, where),
        context.spec.pixel_channels,
        options,
    )


__all__ = [
    "CrossIB",
    "ObjectIntraIB",
    "ObjectVectors",
    "VTDCrossOptions",
    "VTDIntraOptions",
    "WindowIntraIB",
    "vtd_cross",
    "vtd_intra",
]
