"""The traceable parts of a MultiTaskNet and the check that a model can be exported.

`NetworkGraph`: images -> every task's raw outputs (dense maps, tagging logits, the RPN's
objectness and delta maps) and the FPN levels the RoI heads pool from. `RoIGraph`: FPN levels +
boxes [R, 5] -> one RoI head's raw outputs (the detector's box head on proposals, the mask /
keypoint heads on detections). What lies between them (proposals, NMS, RoI selection) and after
them (each task's post-processing) is data-dependent and runs in `drivemtl.export.runtime`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from torch import Tensor, nn

from drivemtl.export.errors import ExportError
from drivemtl.export.roi_align import multiscale_roi_align
from drivemtl.models.features import OBJECTS, REFERENCE, Features
from drivemtl.models.heads.detector import TwoStageDetector
from drivemtl.models.heads.keypoint_head import KeypointHead
from drivemtl.models.heads.mask_head import MaskHead
from drivemtl.models.multitask import ModelOutputs, MultiTaskNet, _feature_list
from drivemtl.models.stage import Stage, declared

ROI_HEADS = (MaskHead, KeypointHead)


def level_name(stride: int) -> str:
    """Graph name of the pixel level with `stride` (4 -> 'pixel.p2')."""
    return f"pixel.p{int(stride).bit_length() - 1}"


@dataclass
class ExportPlan:
    """What goes into which graph: the network's stages, the detector, the RoI heads.

    `stages`: the schedule of every enabled task's heads; `detector`: the name of the
    two-stage detector head (None without one); `roi_heads`: mask / keypoint heads (second
    graphs); `levels`: strides of the FPN levels the RoI graphs read.
    """

    tasks: list[str]
    stages: list[Stage]
    detector: str | None = None
    roi_heads: list[str] = field(default_factory=list)
    levels: tuple[int, ...] = ()

    def roi_graphs(self) -> list[str]:
        """Heads exported as RoI graphs: the detector's box head first, then the RoI heads."""
        return ([self.detector] if self.detector else []) + self.roi_heads


def _head_label(model: MultiTaskNet, name: str) -> str:
    role = "support head" if name in model.support else "head"
    return f"model.tasks.{name} {role} ({type(model.heads[name]).__name__})"


def _refuse_video_head(model: MultiTaskNet, task: str, head: nn.Module) -> None:
    """An ExportError for the video heads: flow (a frame pair in) and the tracker's embedding
    head (RoI embeddings of the detections, matched against per-video state kept outside the
    network); `mots`, which only joins the tracker's ids, goes with `mot`."""
    if REFERENCE not in declared(head, "needs", ()):
        return
    if getattr(head, "reference_at_inference", False):
        raise ExportError(
            f"{_head_label(model, task)} cannot be exported: it predicts from a frame pair (the "
            "key and reference frames' features), and the exported network takes one frame "
            "(`images`); export the model without this task"
        )
    raise ExportError(
        f"{_head_label(model, task)} cannot be exported: a tracker's embedding head pools "
        "the detections' RoIs (none of the RoI heads the runtime feeds: mask_rcnn, "
        "keypoint_rcnn) and its tracker keeps per-video state outside the network; export the "
        "model without mot (and mots, which joins its ids)"
    )


def plan_export(model: MultiTaskNet) -> ExportPlan:
    """The export plan of `model`, or an ExportError naming the head / stage that cannot be
    exported and why."""
    stages = model.schedule(model.task_names)
    plan = ExportPlan(tasks=model.task_names, stages=stages)
    for stage in stages:
        streams = (*stage.needs, *stage.provides, *stage.modifies)
        if stage.kind in ("adapter", "group", "interaction", "exchange") and OBJECTS in streams:
            raise ExportError(
                f"model.{stage.path} ({stage.kind}) cannot be exported: it works on the object "
                "stream (detections after NMS), which is data-dependent and lies outside the "
                "exported graphs"
            )
        if stage.kind != "decoder":
            continue
        head = model.heads[stage.task]
        _refuse_video_head(model, stage.task, head)
        if isinstance(head, TwoStageDetector):
            plan.detector = stage.task
        elif isinstance(head, ROI_HEADS):
            plan.roi_heads.append(stage.task)
        elif OBJECTS in declared(head, "provides", ()):
            raise ExportError(
                f"{_head_label(model, stage.task)} cannot be exported: it provides the object "
                "stream, which the runtime rebuilds only for the two-stage detector (its RPN and "
                "box head split into graphs); this head pools RoIs between its own stages"
            )
        elif OBJECTS in declared(head, "needs", ()):
            raise ExportError(
                f"{_head_label(model, stage.task)} cannot be exported: it reads the object stream "
                "and is none of the RoI heads the runtime feeds with boxes (mask_rcnn, "
                "keypoint_rcnn)"
            )
    if plan.roi_heads and plan.detector is None:
        raise ExportError(
            f"{_head_label(model, plan.roi_heads[0])} cannot be exported: no two-stage detector "
            "provides its boxes"
        )
    strides: set[int] = set()
    if plan.detector:
        strides.update(model.heads[plan.detector].roi_config.pooler_strides)
    for name in plan.roi_heads:
        strides.update(model.heads[name].strides)
    plan.levels = tuple(sorted(strides))
    return plan


def _flatten(name: str, value: object, label: str) -> dict[str, Tensor]:
    """Graph outputs of one head's raw outputs: a tensor, or a plain dict of tensors."""
    if isinstance(value, Tensor):
        return {name: value}
    if type(value) is dict and all(isinstance(v, Tensor) for v in value.values()):
        return {f"{name}.{key}": v for key, v in value.items()}
    raise ExportError(
        f"{label} cannot be exported: its raw outputs are a {type(value).__name__}, and the "
        "runtime rebuilds only tensors or plain dicts of tensors from graph outputs"
    )


class NetworkGraph(nn.Module):
    """images [B, 3, H, W] (normalised, padded) -> named raw outputs (see module docstring)."""

    def __init__(self, model: MultiTaskNet, plan: ExportPlan) -> None:
        super().__init__()
        self.model = model
        self.plan = plan

    def features(self, images: Tensor) -> Features:
        """Backbone + neck; sizes stay traced values so that the graph keeps dynamic shapes."""
        backbone = _feature_list(self.model.backbone(images))
        pixel = _feature_list(self.model.neck(backbone))
        return Features(
            image=backbone[-1],
            pixel=pixel,
            strides=self.model.spec.strides,
            input_size=(images.shape[-2], images.shape[-1]),
            image_sizes=[],
            backbone=backbone,
        )

    def named_outputs(self, images: Tensor) -> dict[str, Tensor]:
        """Every graph output by name, in the graph's output order."""
        features = self.features(images)
        outputs = ModelOutputs(features=features)
        named: dict[str, Tensor] = {}
        for stage in self.plan.stages:
            if stage.kind in ("backbone", "neck"):
                continue
            if stage.kind == "decoder" and stage.task == self.plan.detector:
                detector = self.model.heads[stage.task]
                objectness, deltas = detector.rpn.head(features.levels(detector.rpn_strides))
                for stride, obj, dlt in zip(detector.rpn_strides, objectness, deltas, strict=True):
                    level = level_name(stride).split(".")[1]
                    named[f"{stage.task}.rpn.objectness.{level}"] = obj
                    named[f"{stage.task}.rpn.deltas.{level}"] = dlt
                continue
            if stage.task in self.plan.roi_heads or stage.task == self.plan.detector:
                continue  # RoI graphs (the detector's predictor stage is its box head's graph)
            self.model._run(stage, features, None, outputs)
        for name in self.plan.tasks:
            if name in outputs.heads:
                label = _head_label(self.model, name)
                named.update(_flatten(name, outputs.heads[name], label))
        for stride in self.plan.levels:
            named[level_name(stride)] = features.levels((stride,))[0]
        return named

    def forward(self, images: Tensor) -> tuple[Tensor, ...]:
        """The outputs of `named_outputs` as a tuple (for tracing)."""
        return tuple(self.named_outputs(images).values())


class RoIGraph(nn.Module):
    """FPN levels + rois [R, 5] (batch index, x1, y1, x2, y2 in input pixels) -> a RoI head's
    raw outputs: (class_logits, box_deltas) for the box head, (logits,) for mask / keypoint."""

    def __init__(self, head: nn.Module) -> None:
        super().__init__()
        self.head = head
        if isinstance(head, TwoStageDetector):
            self.strides = tuple(head.roi_config.pooler_strides)
            self.pooler = head.box_head.pooler
        else:
            self.strides = tuple(head.strides)
            self.pooler = head.pooler

    @property
    def input_names(self) -> list[str]:
        """The graph's inputs: the levels it pools from, then the boxes."""
        return [level_name(s) for s in self.strides] + ["rois"]

    @property
    def output_names(self) -> list[str]:
        """The graph's outputs."""
        if isinstance(self.head, TwoStageDetector):
            return ["class_logits", "box_deltas"]
        return ["logits"]

    def named_outputs(self, maps: Mapping[int, Tensor], rois: Tensor) -> dict[str, Tensor]:
        """Outputs by name for `maps` (stride -> level) and `rois`."""
        return dict(
            zip(self.output_names, self(*[maps[s] for s in self.strides], rois), strict=True)
        )

    def forward(self, *inputs: Tensor) -> tuple[Tensor, ...]:
        """Pool the rois from their levels, then the head's layers."""
        *maps, rois = inputs
        pooled = multiscale_roi_align(self.pooler, maps, self.strides, rois)
        if isinstance(self.head, TwoStageDetector):
            return self.head.box_head.classify(pooled)
        return (self.head.logits(pooled),)


def build_graphs(model: MultiTaskNet) -> tuple[ExportPlan, NetworkGraph, dict[str, RoIGraph]]:
    """The plan, the network graph and one RoI graph per RoI head (all in eval mode)."""
    plan = plan_export(model)
    network = NetworkGraph(model, plan).eval()
    rois = {name: RoIGraph(model.heads[name]).eval() for name in plan.roi_graphs()}
    return plan, network, rois
