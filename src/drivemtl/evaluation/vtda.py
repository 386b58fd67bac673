"""VTDA (VTDNet, ICCV'23 sec. 3.2 / F.2): scaled task scores averaged per group, groups summed.

Each metric x_t (percent) has a scaling factor s_t = 1 / ceil(2 sigma_t), sigma_t being its spread
over single-task baselines. A group score is the s_t-weighted mean sum(s_t x_t) / sum(s_t) of its
metrics (normalised to 0..100, as the paper's tables are); VTDA is the sum of the group scores.
Metrics that were not evaluated are dropped from their group's mean.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from drivemtl.evaluation.base import EVALUATORS
from drivemtl.evaluation.flow import FlowEvaluator
from drivemtl.structures.batch import Batch
from drivemtl.structures.instances import Instances
from drivemtl.structures.predictions import FramePrediction

GROUPS = ("classification", "segmentation", "localization", "association")

# metric key -> (group, s_t) from the paper's Table 14 (s_t as printed: 1/1, 1/2, 1/3, 1/4, 1/5, 1/7)
PAPER_SCALES: dict[str, tuple[str, float]] = {
    "tagging/weather": ("classification", 1.0),
    "tagging/scene": ("classification", 1 / 2),
    "semantic/mIoU": ("segmentation", 1 / 5),
    "drivable/mIoU": ("segmentation", 1 / 2),
    "lanes/mIoU": ("segmentation", 1 / 2),
    "detection/AP": ("localization", 1 / 3),
    "instance/AP": ("localization", 1 / 4),
    "pose/AP": ("localization", 1 / 7),
    "mot/AP": ("localization", 1 / 3),
    "mots/AP": ("localization", 1 / 4),
    "flow/mIoU": ("association", 1 / 2),
    "mot/AssA": ("association", 1 / 2),
    "mots/AssA": ("association", 1 / 3),
}


def scale_from_sigma(sigma: float) -> float:
    """s_t = 1 / ceil(2 sigma_t)."""
    if sigma <= 0:
        raise ValueError(f"sigma must be positive, got {sigma}")
    return 1.0 / math.ceil(2.0 * sigma)


def scales_from_sigmas(sigmas: dict[str, float]) -> dict[str, tuple[str, float]]:
    """Scaling table from measured sigmas (keys as in `PAPER_SCALES`)."""
    unknown = set(sigmas) - set(PAPER_SCALES)
    if unknown:
        raise KeyError(f"unknown VTDA metric(s) {sorted(unknown)}; known: {sorted(PAPER_SCALES)}")
    return {k: (PAPER_SCALES[k][0], scale_from_sigma(s)) for k, s in sigmas.items()}


@dataclass
class VtdaResult:
    """Group scores (NaN for a group with no metric) and their sum."""

    groups: dict[str, float]
    total: float

    def as_dict(self) -> dict[str, float]:
        """`VTDA` and `VTDA/<group>`."""
        return {"VTDA": self.total} | {f"VTDA/{g}": v for g, v in self.groups.items()}


def vtda(
    scores: dict[str, float], scales: dict[str, tuple[str, float]] | None = None
) -> VtdaResult:
    """VTDA of `scores` ({"semantic/mIoU": 59.7, ...}, percent); unknown keys are ignored."""
    table = scales or PAPER_SCALES
    groups = {}
    for group in GROUPS:
        members = [
            (scores[k], s)
            for k, (g, s) in table.items()
            if g == group and k in scores and not math.isnan(scores[k])
        ]
        weight = sum(s for _, s in members)
        groups[group] = sum(x * s for x, s in members) / weight if members else math.nan
    total = sum(v for v in groups.values() if not math.isnan(v))
    return VtdaResult(groups, total)


# VTDA metric key -> the `task/metric` key our evaluators report it under.
RESULT_KEYS: dict[str, str] = {
    "tagging/weather": "tagging/acc/weather",
    "tagging/scene": "tagging/acc/scene",
    "semantic/mIoU": "semantic/mIoU",
    "drivable/mIoU": "drivable/VTD_mIoU",
    "lanes/mIoU": "lanes/VTD_mIoU",
    "detection/AP": "detection/AP",
    "instance/AP": "instance/AP",
    "pose/AP": "pose/AP",
    "mot/AP": "mot/AP",
    "mots/AP": "mots/AP",
    "flow/mIoU": "flow/mIoU",
    "mot/AssA": "mot/AssA",
    "mots/AssA": "mots/AssA",
}


def vtda_scores(results: dict[str, dict[str, float]]) -> dict[str, float]:
    """The VTDA inputs found in evaluator results ({task: {metric: value}}), by VTDA key."""
    flat = {f"{t}/{k}": v for t, metrics in results.items() for k, v in metrics.items()}
    return {key: flat[source] for key, source in RESULT_KEYS.items() if source in flat}


def instance_id_map(inst: Instances | None, size: tuple[int, int]) -> np.ndarray:
    """[H, W] int64 map of track id + 1 (0 = background) from an object's masks; objects without
    a track id or mask are left out (later objects paint over earlier ones)."""
    out = np.zeros(size, np.int64)
    if inst is None or inst.masks is None or inst.track_ids is None:
        return out
    h, w = size
    masks = inst.masks[:, :h, :w].cpu().numpy()
    for mask, track in zip(masks, inst.track_ids.cpu().tolist(), strict=True):
        if track >= 0:
            out[mask] = track + 1
    return out


def _resize_flow(flow: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    """[2, H, W] flow at `size`, vectors scaled with the resize (bilinear)."""
    if tuple(flow.shape[-2:]) == tuple(size):
        return flow.detach().cpu().double().numpy()
    sy, sx = size[0] / flow.shape[-2], size[1] / flow.shape[-1]
    resized = torch.nn.functional.interpolate(
        flow[None].double(), size=size, mode="bilinear", align_corners=False
    )[0]
    resized[0] *= sx
    resized[1] *= sy
    return resized.cpu().numpy()


@EVALUATORS.register("flow")
class VtdFlowEvaluator(FlowEvaluator):
    """`drivemtl eval` side of the VTD flow proxy (`flow/mIoU`, a VTDA association input): the
    next frame's tracked instance masks warped back with the predicted flow against the key
    frame's, plus EPE / Fl-all where true flow is labelled. Needs clips whose first reference
    frame is the next frame of the same video (`clip.sampling: next`); other samples are not
    scored."""

    def update(self, predictions: list[FramePrediction], batch: Batch) -> None:
        """Add the samples with a flow prediction to their next frame (a prediction to another
        reference, e.g. the previous frame at a video's end, is not scored against the true
        forward flow)."""
        reference = batch.reference
        for i, pred in enumerate(predictions):
            if pred.flow is None or reference is None or not _is_next_frame(batch, reference, i):
                continue
            size = batch.image_sizes[i]
            flow = _resize_flow(pred.flow, size)
            if batch.flow is not None and bool(batch.is_labeled("flow")[i]):
                valid = (
                    None if batch.flow_valid is None else batch.flow_valid[i, : size[0], : size[1]]
                )
                self.add_flow(batch.flow[i, :, : size[0], : size[1]].cpu().numpy(), flow,
                              None if valid is None else valid.cpu().numpy())  # fmt: skip
            self.add_masks(instance_id_map(batch.instances[i], size),
                           instance_id_map(reference.instances[i], size), flow)  # fmt: skip


def _is_next_frame(batch: Batch, reference: Batch, i: int) -> bool:
    key, ref = batch.metas[i], reference.metas[i]
    return (key.video is not None and key.video == ref.video and key.frame_index is not None
            and ref.frame_index == key.frame_index + 1)  # fmt: skip
