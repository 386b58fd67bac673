"""Lane-marking metrics: the BDD100K boundary F-score and VTDNet's dilated-ground-truth lane mIoU.

BDD100K: for each attribute (direction, style, category) and each of its values, a lane pixel mask
of prediction and ground truth is compared per frame; precision / recall count the pixels within
1, 2 or 5 pixels (disk dilation) of the other mask, the F-score is averaged over frames, then over
values, then over the three attributes (`F1_pix1`, `F1_pix2`, `F1_pix5`, in percent).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from drivemtl.evaluation.base import EVALUATORS, check_same_type
from drivemtl.evaluation.segmentation import resize_nearest
from drivemtl.structures import bdd
from drivemtl.structures.batch import Batch
from drivemtl.structures.predictions import FramePrediction

BOUND_PIXELS = (1, 2, 5)
# attribute -> (bit offset, bit width, value names) in the one-byte BDD lane encoding
LANE_ATTRIBUTES: dict[str, tuple[int, int, tuple[str, ...]]] = {
    "direction": (5, 1, bdd.LANE_DIRECTIONS),
    "style": (4, 1, bdd.LANE_STYLES),
    "category": (0, 3, bdd.LANE_CATEGORIES),
}
_MODEL_CHANNEL = {"category": 0, "direction": 1, "style": 2}


def disk(radius: int) -> np.ndarray:
    """Disk structuring element: offsets with x^2 + y^2 <= r^2 (scikit-image's `disk`)."""
    r = np.arange(-radius, radius + 1)
    return ((r[None, :] ** 2 + r[:, None] ** 2) <= radius**2).astype(np.uint8)


def dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    """Binary dilation of a boolean mask with a disk of `radius` pixels."""
    return cv2.dilate(mask.astype(np.uint8), disk(radius)).astype(bool)


def boundary_f_score(gt: np.ndarray, pred: np.ndarray, radius: int) -> float:
    """BDD100K lane F-score of two boolean masks with `radius`-pixel tolerance (0..1)."""
    return float(_pair_stats(gt, pred, (radius,), None)[0][0])


def _f_score(gt: np.ndarray, pred: np.ndarray, n_gt: int, n_pd: int, radius: int) -> float:
    if n_pd == 0 and n_gt == 0:
        return 1.0
    if n_pd == 0:
        precision, recall = 1.0, 0.0
    elif n_gt == 0:
        precision, recall = 0.0, 1.0
    else:
        precision = float(np.count_nonzero(pred & dilate(gt, radius))) / n_pd
        recall = float(np.count_nonzero(gt & dilate(pred, radius))) / n_gt
    if precision + recall == 0:
        return 0.0
    return 2.0 * precision * recall / (precision + recall)


def bounding_slices(mask: np.ndarray, margin: int) -> tuple[slice, slice] | None:
    """Row / column slices of the True pixels of `mask` grown by `margin` (None when empty)."""
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    h, w = mask.shape
    return (
        slice(max(int(rows[0]) - margin, 0), min(int(rows[-1]) + margin + 1, h)),
        slice(max(int(cols[0]) - margin, 0), min(int(cols[-1]) + margin + 1, w)),
    )


def _pair_stats(
    gt: np.ndarray, pred: np.ndarray, radii: tuple[int, ...], vtd_dilation: int | None
) -> tuple[np.ndarray, float, float]:
    """F-scores at `radii`, and VTD intersection / union with the dilated ground truth.

    Works on the bounding box of both masks grown by the largest radius: dilation never reaches
    further, and pixels outside hold no lane, so the numbers equal the full-image ones.
    """
    n_gt, n_pd = int(np.count_nonzero(gt)), int(np.count_nonzero(pred))
    if n_gt == 0 and n_pd == 0:
        return np.ones(len(radii)), 0.0, 0.0
    margin = max((*radii, vtd_dilation or 0)) + 1
    box = bounding_slices(gt | pred, margin)
    assert box is not None
    g, p = gt[box], pred[box]
    scores = np.array([_f_score(g, p, n_gt, n_pd, r) for r in radii])
    inter = union = 0.0
    if vtd_dilation is not None:
        g_dil = dilate(g, vtd_dilation) if n_gt else g
        inter = float(np.count_nonzero(g_dil & p))
        union = float(np.count_nonzero(g_dil)) + n_pd - inter
    return scores, inter, union


def decode_lane_byte(byte: np.ndarray, attribute: str, value: int) -> np.ndarray:
    """Foreground pixels (background bit clear) whose `attribute` field equals `value`."""
    return lane_field(byte, attribute) == value


def lane_field(byte: np.ndarray, attribute: str) -> np.ndarray:
    """int16 map of `attribute`'s value index per lane pixel, -1 where the background bit is set."""
    offset, width, _ = LANE_ATTRIBUTES[attribute]
    byte = np.asarray(byte, dtype=np.uint8)
    field = ((byte >> offset) & ((1 << width) - 1)).astype(np.int16)
    field[(byte & bdd.LANE_BACKGROUND_BIT) != 0] = -1
    return field


@EVALUATORS.register("lanes")
class LaneEvaluator:
    """Per-frame F-scores (BDD100K) and dilated-ground-truth IoU counts (VTDNet)."""

    task = "lanes"

    def __init__(self, vtd_dilation: int = 5) -> None:
        self.vtd_dilation = vtd_dilation
        self.reset()

    def reset(self) -> None:
        """Forget all frames."""
        self.frame_scores: dict[str, list[np.ndarray]] = {a: [] for a in LANE_ATTRIBUTES}
        self.inter = {a: np.zeros(len(v[2])) for a, v in LANE_ATTRIBUTES.items()}
        self.union = {a: np.zeros(len(v[2])) for a, v in LANE_ATTRIBUTES.items()}

    def merge(self, other: LaneEvaluator) -> None:
        """Add another evaluator's frames."""
        check_same_type(self, other)
        for a in LANE_ATTRIBUTES:
            self.frame_scores[a].extend(other.frame_scores[a])
            self.inter[a] += other.inter[a]
            self.union[a] += other.union[a]

    def add_masks(
        self, attribute: str, gt_masks: list[np.ndarray], pd_masks: list[np.ndarray]
    ) -> None:
        """Add one frame's boolean masks of every value of `attribute`."""
        stats = [
            _pair_stats(np.asarray(g, bool), np.asarray(p, bool), BOUND_PIXELS, self.vtd_dilation)
            for g, p in zip(gt_masks, pd_masks, strict=True)
        ]
        self.frame_scores[attribute].append(np.stack([s[0] for s in stats]))
        self.inter[attribute] += np.array([s[1] for s in stats])
        self.union[attribute] += np.array([s[2] for s in stats])

    def add_fields(
        self, gt_fields: dict[str, np.ndarray], pd_fields: dict[str, np.ndarray]
    ) -> None:
        """Add one frame given per attribute value-index maps (-1 = no lane), e.g. `lane_field`."""
        for attribute, (_, _, names) in LANE_ATTRIBUTES.items():
            g, p = gt_fields[attribute], pd_fields[attribute]
            gts = [g == v for v in range(len(names))]
            pds = [p == v for v in range(len(names))]
            self.add_masks(attribute, gts, pds)

    def _add_cropped(self, fg: np.ndarray, fields: Callable[[tuple[slice, slice]], tuple]) -> None:
        """Crop to the lane pixels of either side (plus margin) before decoding: same numbers."""
        box = bounding_slices(fg, max(*BOUND_PIXELS, self.vtd_dilation) + 1)
        if box is None:  # no lane anywhere: every value scores 1, nothing to count
            for attribute, (_, _, names) in LANE_ATTRIBUTES.items():
                self.frame_scores[attribute].append(np.ones((len(names), len(BOUND_PIXELS))))
            return
        self.add_fields(*fields(box))

    def add_bytes(self, gt_byte: np.ndarray, pred_byte: np.ndarray | None) -> None:
        """Add one frame in the BDD100K one-byte encoding.

        A missing prediction (None) is scored as the official evaluator scores it: an all-zero
        byte map, i.e. every pixel a parallel solid crosswalk (not "no lanes").
        """
        if pred_byte is None:
            pred_byte = np.zeros_like(gt_byte)
        if gt_byte.shape != pred_byte.shape:
            raise ValueError(f"lane ground truth is {gt_byte.shape}, prediction {pred_byte.shape}")
        gt_byte = np.asarray(gt_byte, np.uint8)
        pred_byte = np.asarray(pred_byte, np.uint8)
        fg = ((gt_byte & bdd.LANE_BACKGROUND_BIT) == 0) | (
            (pred_byte & bdd.LANE_BACKGROUND_BIT) == 0
        )

        def fields(box: tuple[slice, slice]) -> tuple[dict, dict]:
            g, p = gt_byte[box], pred_byte[box]
            return (
                {a: lane_field(g, a) for a in LANE_ATTRIBUTES},
                {a: lane_field(p, a) for a in LANE_ATTRIBUTES},
            )

        self._add_cropped(fg, fields)

    def add_files(self, gt_path: Path, pred_path: Path | None) -> None:
        """Add one frame from BDD100K lane bitmask PNGs."""
        gt = read_lane_png(gt_path)
        self.add_bytes(gt, read_lane_png(pred_path) if pred_path is not None else None)

    def update(self, predictions: list[FramePrediction], batch: Batch) -> None:
        """Add model lane maps ([3, H, W]: category, direction, style; 0 = no lane)."""
        labeled = batch.is_labeled(self.task)
        for i, pred in enumerate(predictions):
            if not bool(labeled[i]) or batch.lanes is None:
                continue
            if pred.lanes is None:
                raise ValueError(f"frame {pred.meta.name!r}: no lanes prediction")
            h, w = batch.image_sizes[i]
            target = batch.lanes[i, :, :h, :w].cpu().numpy().astype(np.int16)
            lanes = resize_nearest(pred.lanes, (h, w)).cpu().numpy().astype(np.int16)
            fg = (target > 0).any(axis=0) | (lanes > 0).any(axis=0)

            def fields(box: tuple[slice, slice], t=target, p=lanes) -> tuple[dict, dict]:
                return (
                    {a: t[(c, *box)] - 1 for a, c in _MODEL_CHANNEL.items()},
                    {a: p[(c, *box)] - 1 for a, c in _MODEL_CHANNEL.items()},
                )

            self._add_cropped(fg, fields)

    def compute(self) -> dict[str, float]:
        """`F1_pix{1,2,5}` (mean of the three attributes), per attribute / value, `VTD_mIoU`."""
        result: dict[str, float] = {}
        if not self.frame_scores["category"]:
            return {f"F1_pix{r}": math.nan for r in BOUND_PIXELS} | {"VTD_mIoU": math.nan}
        attribute_means = []
        for attribute, (_, _, names) in LANE_ATTRIBUTES.items():
            per_value = np.stack(self.frame_scores[attribute]).mean(axis=0) * 100  # [V, 3]
            mean = per_value.mean(axis=0)
            attribute_means.append(mean)
            for k, r in enumerate(BOUND_PIXELS):
                result[f"F1_pix{r}/{attribute.upper()}"] = float(mean[k])
                for v, name in enumerate(names):
                    result[f"F1_pix{r}/{name}"] = float(per_value[v, k])
        overall = np.mean(attribute_means, axis=0)
        for k, r in enumerate(BOUND_PIXELS):
            result[f"F1_pix{r}"] = float(overall[k])
        ious = []
        for attribute in LANE_ATTRIBUTES:
            valid = self.union[attribute] > 0
            if valid.any():
                iou = self.inter[attribute][valid] / self.union[attribute][valid]
                result[f"VTD_IoU/{attribute}"] = float(iou.mean()) * 100
                ious.append(float(iou.mean()) * 100)
        result["VTD_mIoU"] = float(np.mean(ious)) if ious else math.nan
        return result


def read_lane_png(path: Path) -> np.ndarray:
    """A one-channel uint8 lane bitmask; fails naming the file when unreadable or not 2-D."""
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise FileNotFoundError(f"{path}: cannot read lane bitmask")
    if image.ndim != 2 or image.dtype != np.uint8:
        raise ValueError(
            f"{path}: lane bitmask must be one-channel uint8, got {image.shape} {image.dtype}"
        )
    return image
