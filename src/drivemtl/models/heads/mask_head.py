"""Mask R-CNN mask head: 14x14 RoI features -> 4 convs -> 2x deconv -> class-specific 28x28 masks.

Trained on the positive RoIs sampled by the detection head; at inference it runs on the final
detections. `paste_masks` puts the low-resolution masks back into an image.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from drivemtl.models.features import OBJECTS, PIXEL, Features, FeatureSpec, ObjectFeatures
from drivemtl.models.heads.roi_heads import ObjectVectorInput, add_object_vectors
from drivemtl.ops.roi_align import MultiScaleRoIAlign
from drivemtl.structures.batch import Batch


@dataclass
class RoIHeadOutputs:
    """Per-RoI outputs of a mask or keypoint head and the RoIs they belong to.

    logits: [R, ...] for all images concatenated; boxes / classes (and, in training, the matched
    ground-truth index, or at inference the detection scores) per image, in padded-input pixels.
    """

    logits: Tensor
    boxes: list[Tensor]
    classes: list[Tensor]
    gt_index: list[Tensor] | None = None
    scores: list[Tensor] | None = None

    def per_image(self) -> tuple[Tensor, ...]:
        """`logits` split into each image's rows (one per box of that image)."""
        return torch.split(self.logits, [b.shape[0] for b in self.boxes])


@dataclass
class RoISelection:
    """The RoIs a second-stage head works on, per image (see `select_roi_set`).

    boxes / classes; gt_index (training: matched ground truth) or scores (inference); sources:
    each box's row among the box head's input boxes (training: its sampled RoI's index; at
    inference: its detection's source proposal, `ObjectFeatures.det_sources`), which is where
    its object vector lies.
    """

    boxes: list[Tensor]
    classes: list[Tensor]
    gt_index: list[Tensor] | None
    scores: list[Tensor] | None
    sources: list[Tensor]


def select_roi_set(
    objects: ObjectFeatures | None,
    batch: Batch | None,
    keep_class: Callable[[Tensor], Tensor],
    keep_image: Callable[[int], bool],
) -> RoISelection:
    """RoIs a second-stage head works on: positive sampled RoIs (training) or detections.

    `keep_class` filters by class; `keep_image(i)` says whether image i has the needed labels.
    """
    if objects is None:
        raise RuntimeError(
            "a mask / keypoint head needs the object stream, which no stage provided"
        )
    if batch is not None:
        return _training_rois(objects, keep_class, keep_image)
    if objects.detections is None or objects.det_classes is None or objects.det_scores is None:
        raise RuntimeError("inference with a RoI head needs the detection head's detections")
    boxes, classes, scores, sources = [], [], [], []
    det_sources = objects.det_sources or [None] * len(objects.detections)
    for det, cls, score, source in zip(
        objects.detections, objects.det_classes, objects.det_scores, det_sources, strict=True
    ):
        keep = keep_class(cls)
        boxes.append(det[keep])
        classes.append(cls[keep])
        scores.append(score[keep])
        rows = torch.arange(len(det), device=det.device) if source is None else source
        sources.append(rows[keep])
    return RoISelection(boxes, classes, None, scores, sources)


def _training_rois(
    objects: ObjectFeatures,
    keep_class: Callable[[Tensor], Tensor],
    keep_image: Callable[[int], bool],
) -> RoISelection:
    """The positive sampled RoIs of the kept classes and images, with their RoI indices."""
    if objects.rois is None or objects.roi_labels is None or objects.roi_gt_index is None:
        raise RuntimeError("training a RoI head needs sampled RoIs from the detection head")
    boxes, classes, gt_index, sources = [], [], [], []
    for i, (rois, labels, gt) in enumerate(
        zip(objects.rois, objects.roi_labels, objects.roi_gt_index, strict=True)
    ):
        keep = (gt >= 0) & keep_class(labels)
        if not keep_image(i):
            keep = torch.zeros_like(keep)
        boxes.append(rois[keep])
        classes.append(labels[keep])
        gt_index.append(gt[keep])
        sources.append(torch.nonzero(keep).squeeze(1))
    return RoISelection(boxes, classes, gt_index, None, sources)


def select_rois(
    objects: ObjectFeatures | None,
    batch: Batch | None,
    keep_class: Callable[[Tensor], Tensor],
    keep_image: Callable[[int], bool],
) -> tuple[list[Tensor], list[Tensor], list[Tensor] | None, list[Tensor] | None]:
    """(boxes, classes, gt_index, scores) of `select_roi_set` (the export runtime's view)."""
    chosen = select_roi_set(objects, batch, keep_class, keep_image)
    return chosen.boxes, chosen.classes, chosen.gt_index, chosen.scores


def roi_vectors(
    objects: ObjectFeatures, task: str | None, chosen: RoISelection, reads: bool
) -> Tensor | None:
    """The object vectors of the chosen RoIs for a head that `reads` its task's vectors."""
    if not reads or task is None:
        return None
    return objects.task_vectors_at(task, chosen.sources)


def vector_input(spec: FeatureSpec, task: str | None) -> ObjectVectorInput | None:
    """The layer adding `task`'s object vectors to a RoI head's pooled features, when an
    interaction block writes them (`spec.object_vectors`); None otherwise."""
    width = spec.object_vectors.get(task) if task is not None else None
    return ObjectVectorInput(width, spec.pixel_channels) if width else None


def pool_with_vectors(head: nn.Module, features: Features, chosen: RoISelection) -> Tensor:
    """RoIAlign of the chosen boxes by `head.pooler` from its `strides`, plus the boxes' object
    vectors when the head reads them (`head.vector_input`)."""
    pooled = head.pooler(features.levels(head.strides), head.strides, chosen.boxes)
    reads = head.vector_input is not None
    vectors = roi_vectors(features.require_objects(type(head).__name__), head.task, chosen, reads)
    return add_object_vectors(head.vector_input, pooled, vectors, f"{head.task} head")


def conv_stack(in_channels: int, channels: int, num_convs: int) -> nn.Sequential:
    """`num_convs` x (3x3 conv + ReLU), the RoI feature tower of the mask and keypoint heads."""
    layers: list[nn.Module] = []
    for i in range(num_convs):
        layers += [nn.Conv2d(in_channels if i == 0 else channels, channels, 3, padding=1),
                   nn.ReLU(inplace=True)]  # fmt: skip
    return nn.Sequential(*layers)


class MaskHead(nn.Module):
    """Mask R-CNN mask branch with one 28x28 mask per class (see module docstring)."""

    needs = (PIXEL, OBJECTS)

    def __init__(
        self,
        spec: FeatureSpec,
        num_classes: int,
        channels: int = 256,
        num_convs: int = 4,
        resolution: int = 14,
        strides: tuple[int, ...] = (4, 8, 16, 32),
        task: str | None = None,
    ) -> None:
        super().__init__()
        self.task = task
        self.num_classes = num_classes
        self.strides = tuple(strides)
        self.pooler = MultiScaleRoIAlign(resolution, sampling_ratio=2)
        self.convs = conv_stack(spec.pixel_channels, channels, num_convs)
        self.deconv = nn.ConvTranspose2d(
            channels if num_convs else spec.pixel_channels, channels, 2, 2
        )
        self.predictor = nn.Conv2d(channels, num_classes, 1)
        for m in self.modules():
            if isinstance(m, nn.Conv2d | nn.ConvTranspose2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
        nn.init.normal_(self.predictor.weight, std=0.001)
        self.vector_input = vector_input(spec, task)

    def forward(self, features: Features, batch: Batch | None = None) -> RoIHeadOutputs:
        """Mask logits [R, num_classes, 2r, 2r] for the positive RoIs / the detections."""

        def has_masks(i: int) -> bool:
            inst = batch.instances[i] if batch is not None else None
            return inst is not None and inst.masks is not None

        chosen = select_roi_set(features.objects, batch, self.keep_class, has_masks)
        x = pool_with_vectors(self, features, chosen)
        return RoIHeadOutputs(
            self.logits(x), chosen.boxes, chosen.classes, chosen.gt_index, chosen.scores
        )

    def keep_class(self, classes: Tensor) -> Tensor:
        """[R] bool: the detections this head makes masks for (its classes)."""
        return classes < self.num_classes

    def logits(self, pooled: Tensor) -> Tensor:
        """Mask logits of RoI features pooled to [R, C, r, r] (the exported part)."""
        return self.predictor(F.relu(self.deconv(self.convs(pooled))))


def paste_masks(probs: Tensor, boxes: Tensor, size: tuple[int, int]) -> Tensor:
    """Resample [N, M, M] mask probabilities into their boxes of an image: [N, H, W] float.

    Each pixel centre inside a box is mapped to the mask grid (bilinear, the mask spanning the
    box edges); pixels outside the box get 0.
    """
    height, width = size
    out = probs.new_zeros((probs.shape[0], height, width))
    for n in range(probs.shape[0]):
        x1, y1, x2, y2 = (float(v) for v in boxes[n])
        if x2 - x1 <= 0 or y2 - y1 <= 0:
            continue
        c0, c1 = max(int(x1), 0), min(int(torch.tensor(x2).ceil()), width)
        r0, r1 = max(int(y1), 0), min(int(torch.tensor(y2).ceil()), height)
        if c1 <= c0 or r1 <= r0:
            continue
        xs = (torch.arange(c0, c1, dtype=probs.dtype, device=probs.device) + 0.5 - x1) / (x2 - x1)
        ys = (torch.arange(r0, r1, dtype=probs.dtype, device=probs.device) + 0.5 - y1) / (y2 - y1)
        gy, gx = torch.meshgrid(ys * 2 - 1, xs * 2 - 1, indexing="ij")
        grid = torch.stack((gx, gy), dim=-1)[None]
        sampled = F.grid_sample(
            probs[n][None, None], grid, mode="bilinear", padding_mode="zeros", align_corners=False
        )
        out[n, r0:r1, c0:c1] = sampled[0, 0]
    return out
