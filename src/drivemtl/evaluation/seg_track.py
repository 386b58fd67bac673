"""MOTS (segmentation tracking) metrics as the BDD100K / Scalabel toolkit reports them.

The same CLEAR / Identity event rules and HOTA as box tracking (`tracking.py`), with mask IoU in
place of box IoU: a ground truth and a prediction of the same class may match when their mask IoU
is at least 0.5; an unmatched prediction lying more than half inside a crowd / ignored mask (of any
class) is dropped. Two inputs are read:

- Scalabel frames with `rle` labels (`scalabel.eval.mots`): crowd / ignored labels are ignore
  regions; overlapping predicted masks are an error (the toolkit refuses them too).
- BDD100K RGBA bitmask folders (`bdd100k.eval.mots`), one sub-folder per video: R category
  (1-based), G flags (bit 0 ignored, bit 1 crowd: ignore regions), instance id = B * 256 + A.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from faster_coco_eval.core import mask as mask_utils
from torch import Tensor

from drivemtl.evaluation.base import EVALUATORS, EvaluationInputError
from drivemtl.evaluation.coco import _to_batch_coordinates
from drivemtl.evaluation.config import LabelConfig, default_config
from drivemtl.evaluation.tracking import (
    IGNORE_IOF_THRESHOLD,
    IOU_THRESHOLD,
    BoxTrackEvaluator,
    ClearAccumulator,
    ModelFedTrackEvaluator,
    _assign,
    _integer_ids,
    _is_ignored,
    _track_id,
)
from drivemtl.structures.batch import Batch
from drivemtl.structures.instances import Instances
from drivemtl.structures.predictions import FramePrediction
from drivemtl.structures.scalabel import Frame

IGNORE_FLAGS = 0b11  # G channel: bit 0 ignored, bit 1 crowd


def add_frame_objects(
    accs: list[ClearAccumulator],
    hota_steps: list[list[tuple]],
    gt: tuple[np.ndarray, np.ndarray],
    pred: tuple[np.ndarray, np.ndarray],
    ious: np.ndarray,
    iofs: np.ndarray,
) -> None:
    """Add one frame, class by class: gt / pred = (class index [N], track id [N]) of the valid
    objects, ious [G, P] mask IoU, iofs [P, K] share of each prediction inside each ignore region."""
    (g_cls, g_ids), (p_cls, p_ids) = gt, pred
    for c in range(len(accs)):
        g_sel, p_sel = g_cls == c, p_cls == c
        sim = ious[np.ix_(g_sel, p_sel)].astype(np.float64)
        dists = 1.0 - sim
        dists[~(dists <= 1.0 - IOU_THRESHOLD)] = np.nan
        ids = p_ids[p_sel]
        if iofs.shape[1] and ids.size:
            unmatched = np.ones(ids.size, bool)
            for _, j in _assign(dists):
                unmatched[j] = False
            covered = (iofs[p_sel] > IGNORE_IOF_THRESHOLD).any(axis=1)
            keep = ~(unmatched & covered)
            ids, dists, sim = ids[keep], dists[:, keep], sim[:, keep]
        if dists.shape != (0, 0):
            accs[c].update(g_ids[g_sel], ids, dists)
        hota_steps[c].append((g_ids[g_sel], ids, sim))


def _rle(label_rle: Any) -> dict[str, Any]:
    return {"counts": label_rle.counts.encode("ascii"), "size": list(label_rle.size)}


class SegTrackEvaluator(BoxTrackEvaluator):
    """MOTS metrics from Scalabel RLE frames (`update_frames`) or bitmask PNGs (`add_bitmask_video`).

    `compute()` returns the same keys as box tracking: MOTA, MOTP, IDF1, FP, FN, IDSw, MT, PT, ML,
    FM, mMOTA, mMOTP, mIDF1, HOTA, DetA, AssA (and class-averaged mHOTA ...), per class / group.
    """

    task = "mots"

    def __init__(self, config: LabelConfig | None = None, strict: bool = True) -> None:
        super().__init__(config or default_config("seg_track"), strict)

    # ----------------------------------------------------------------- Scalabel RLE frames
    def _parse_rle(
        self, frame: Frame, ids: dict[str, int] | None, what: str
    ) -> tuple[list[dict], np.ndarray, np.ndarray, list[dict]]:
        rles, classes, track_ids, ignores = [], [], [], []
        for label in frame.labels or []:
            if label.rle is None:
                if label.poly2d is not None:
                    raise EvaluationInputError(
                        f"{what} frame {frame.name!r}, label {label.id!r}: segmentation tracking "
                        "needs rle masks (poly2d is not supported; convert it to rle)"
                    )
                continue
            if not self._known_category(frame, label, what):
                continue
            if _is_ignored(label):
                ignores.append(_rle(label.rle))
                continue
            rles.append(_rle(label.rle))
            classes.append(self.config.categories.index(label.category))
            track_ids.append(_track_id(label, ids, what, frame))
        return rles, np.asarray(classes, np.int64), np.asarray(track_ids, np.int64), ignores

    def _overlapping(self, frame: Frame, rles: list[dict]) -> bool:
        if len(rles) < 2:
            return False
        total = np.zeros(tuple(rles[0]["size"]), np.int32)
        for rle in rles:
            total += mask_utils.decode(rle)
        if not (total > 1).any():
            return False
        if self.strict:
            raise EvaluationInputError(
                f"prediction frame {frame.name!r}: masks overlap; segmentation tracking needs "
                "disjoint masks (without --strict such frames' predictions are dropped with a warning)"
            )
        self.skipped["prediction frame with overlapping masks"] += 1
        return True

    def _add_video(self, frames: list[Frame], preds: dict[str, Frame]) -> None:
        gt_ids = _integer_ids(frames)
        n = len(self.config.categories)
        accs = [ClearAccumulator() for _ in range(n)]
        hota_steps: list[list[tuple]] = [[] for _ in range(n)]
        for frame in frames:
            g_rles, g_cls, g_ids, ignores = self._parse_rle(frame, gt_ids, "ground truth")
            pred_frame = preds.get(frame.name, Frame(name=frame.name))
            p_rles, p_cls, p_ids, _ = self._parse_rle(pred_frame, None, "prediction")
            if self._overlapping(pred_frame, p_rles):
                p_rles, p_cls, p_ids = [], p_cls[:0], p_ids[:0]
            ious = np.zeros((len(g_rles), len(p_rles)))
            if g_rles and p_rles:
                ious = np.asarray(mask_utils.iou(p_rles, g_rles, [0] * len(g_rles))).T
            iofs = np.zeros((len(p_rles), len(ignores)))
            if p_rles and ignores:
                iofs = np.asarray(mask_utils.iou(p_rles, ignores, [1] * len(ignores)))
            add_frame_objects(accs, hota_steps, (g_cls, g_ids), (p_cls, p_ids), ious, iofs)
        self._finish_video(accs, hota_steps)

    # ----------------------------------------------------------------- BDD100K bitmasks
    def add_bitmask_video(
        self, gt_paths: Sequence[Path], pred_paths: Sequence[Path | None]
    ) -> None:
        """Add one video of RGBA bitmask PNGs in frame order (None = no prediction file)."""
        n = len(self.config.categories)
        accs = [ClearAccumulator() for _ in range(n)]
        hota_steps: list[list[tuple]] = [[] for _ in range(n)]
        for gt_path, pred_path in zip(gt_paths, pred_paths, strict=True):
            gt = parse_bitmask(read_rgba(gt_path), gt_path)
            if pred_path is None:
                pred = BitmaskObjects.empty(gt.instance_map.shape)
            else:
                pred = parse_bitmask(read_rgba(pred_path), pred_path)
                if pred.instance_map.shape != gt.instance_map.shape:
                    raise EvaluationInputError(
                        f"{pred_path}: size {pred.instance_map.shape} differs from {gt_path} "
                        f"{gt.instance_map.shape}"
                    )
            ious, iofs = bitmask_overlaps(
                gt.instance_map, len(gt.ids), pred.instance_map, len(pred.ids)
            )
            g_valid = (gt.flags & IGNORE_FLAGS) == 0
            p_valid = (pred.flags & IGNORE_FLAGS) == 0
            add_frame_objects(
                accs,
                hota_steps,
                (gt.categories[g_valid] - 1, gt.ids[g_valid]),
                (pred.categories[p_valid] - 1, pred.ids[p_valid]),
                ious[np.ix_(g_valid, p_valid)],
                iofs[np.ix_(p_valid, ~g_valid)],
            )
        self._finish_video(accs, hota_steps)


class BitmaskObjects:
    """Instances of one RGBA bitmask: map of 1-based instance index, and per instance its id,
    category (R, 1-based) and flags (G)."""

    def __init__(
        self, instance_map: np.ndarray, ids: np.ndarray, categories: np.ndarray, flags: np.ndarray
    ) -> None:
        self.instance_map, self.ids, self.categories, self.flags = (
            instance_map,
            ids,
            categories,
            flags,
        )

    @classmethod
    def empty(cls, shape: tuple[int, ...]) -> BitmaskObjects:
        """No instance at all (a missing prediction file)."""
        none = np.zeros(0, np.int64)
        return cls(np.zeros(shape, np.int64), none, none, none)


def read_rgba(path: Path) -> np.ndarray:
    """An RGBA bitmask as [H, W, 4] uint8 in R, G, B, A order; fails naming the file."""
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise EvaluationInputError(f"{path}: cannot read bitmask")
    if image.ndim != 3 or image.shape[2] != 4 or image.dtype != np.uint8:
        raise EvaluationInputError(
            f"{path}: expected an RGBA uint8 bitmask, got shape {image.shape} {image.dtype}"
        )
    return cv2.cvtColor(image, cv2.COLOR_BGRA2RGBA)


def parse_bitmask(rgba: np.ndarray, path: Path | str = "bitmask") -> BitmaskObjects:
    """Instances of a BDD100K RGBA bitmask (instance id = B * 256 + A, 0 = background), sorted by
    id; an instance whose pixels disagree on category or flags is an error."""
    rgba = np.asarray(rgba)
    instance = (rgba[..., 2].astype(np.int32) << 8) | rgba[..., 3]
    present = np.bincount(instance.reshape(-1), minlength=1 << 16)
    present[0] = 0
    ids = np.flatnonzero(present)
    lut = np.zeros(1 << 16, np.int64)
    lut[ids] = np.arange(1, len(ids) + 1)
    index = np.take(lut, instance)
    values = []
    for channel, what in ((0, "category"), (1, "flags")):
        seen = np.bincount(
            (index.reshape(-1) << 8) | rgba[..., channel].reshape(-1), minlength=(len(ids) + 1) << 8
        ).reshape(len(ids) + 1, 256)[1:]
        bad = np.flatnonzero(np.count_nonzero(seen, axis=1) != 1)
        if bad.size:
            raise EvaluationInputError(
                f"{path}: instance {int(ids[bad[0]])} has more than one {what} value"
            )
        values.append(np.argmax(seen > 0, axis=1).astype(np.int64))
    return BitmaskObjects(index, ids.astype(np.int64), values[0], values[1])


def bitmask_overlaps(
    gt_map: np.ndarray, n_gt: int, pred_map: np.ndarray, n_pred: int
) -> tuple[np.ndarray, np.ndarray]:
    """IoU [G, P] and intersection over prediction area [P, G] of two instance-index maps."""
    size = (n_gt + 1) * (n_pred + 1)
    pairs = gt_map.reshape(-1).astype(np.int64) * (n_pred + 1) + pred_map.reshape(-1)
    table = np.bincount(pairs, minlength=size).reshape(n_gt + 1, n_pred + 1).astype(np.float64)
    inter = table[1:, 1:]
    gt_area = table[1:].sum(axis=1, keepdims=True)
    pred_area = table[:, 1:].sum(axis=0, keepdims=True)
    union = gt_area + pred_area - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        ious = np.where(union > 0, inter / union, 0.0)
        iofs = np.where(pred_area > 0, inter / pred_area, 0.0)
    return ious, iofs.T


def paint_instances(masks: np.ndarray, order: np.ndarray) -> np.ndarray:
    """[N, H, W] bool masks painted in `order` (later on top) into one map of 1-based instance
    indices (0 = background), as a bitmask file holds them."""
    index = np.zeros(masks.shape[-2:], np.int64)
    for k in order:
        index[masks[k]] = int(k) + 1
    return index


@dataclass
class _MOTSFrame:
    """One evaluated frame, reduced to what the CLEAR / HOTA events need."""

    video: str
    frame: int
    gt: tuple[np.ndarray, np.ndarray]  # (class index, track id) of the valid objects
    pred: tuple[np.ndarray, np.ndarray]
    ious: np.ndarray  # [G, P] mask IoU
    iofs: np.ndarray  # [P, K] share of each prediction inside each ignore region


@EVALUATORS.register("mots")
class MOTSEvaluator(ModelFedTrackEvaluator, SegTrackEvaluator):
    """`SegTrackEvaluator` fed batch by batch with model predictions (`drivemtl eval`).

    Ground truth: the instances (masks + track ids; `ignore` ones are crowd regions) of the
    samples labelled for `mots`; predictions: `FramePrediction.instances` with track ids >= 0
    (untracked masks are not tracks), mapped into the batch's coordinates. As in a BDD100K MOTS
    bitmask, the predicted masks are made disjoint by painting them from the lowest to the
    highest score (a mask left without pixels is dropped), and the metrics follow the bitmask
    path of `SegTrackEvaluator`. Frames are scored video by video at `compute`.
    """

    task = "mots"
    config_name = "seg_track"
    pending = ("frames",)
    ap_iou_type = "segm"
    frames: list[_MOTSFrame]

    def update(self, predictions: list[FramePrediction], batch: Batch) -> None:
        """Add the labelled samples' ground truth and tracked instance masks."""
        labeled = batch.is_labeled(self.task)
        for i, pred in enumerate(predictions):
            target = batch.instances[i]
            if not bool(labeled[i]) or target is None or target.track_ids is None:
                continue
            if target.masks is None:
                raise EvaluationInputError(
                    f"frame {pred.meta.name!r}: mots ground truth has no masks"
                )
            h, w = batch.image_sizes[i]
            gt_cls, gt_ids, gt_masks = self._valid(target, target.masks[..., :h, :w])
            ignore = (
                target.ignore.cpu().numpy()[self._in_range(target)]
                if target.ignore is not None
                else np.zeros(len(gt_cls), bool)
            )
            gt_map = paint_instances(gt_masks, np.arange(len(gt_masks)))
            p_cls, p_ids, p_map = self._predicted(pred, (h, w))
            self.add_ap_frame(pred, target, (h, w), self._tracked(pred, (h, w)))
            ious, iofs = bitmask_overlaps(gt_map, len(gt_cls), p_map, len(p_cls))
            meta = pred.meta
            self.frames.append(
                _MOTSFrame(
                    video=meta.video if meta.video is not None else meta.name,
                    frame=meta.frame_index if meta.frame_index is not None else 0,
                    gt=(gt_cls[~ignore], gt_ids[~ignore]),
                    pred=(p_cls, p_ids),
                    ious=ious[~ignore],
                    iofs=iofs[:, ignore],
                )
            )

    def _in_range(self, inst: Instances) -> np.ndarray:
        classes = inst.classes.cpu().numpy()
        return (classes >= 0) & (classes < len(self.categories))

    def _valid(self, inst: Instances, masks: Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(class, track id, mask) of the instances whose class is evaluated."""
        keep = self._in_range(inst)
        classes = inst.classes.cpu().numpy()[keep].astype(np.int64)
        ids = inst.track_ids.cpu().numpy()[keep].astype(np.int64)  # type: ignore[union-attr]
        return classes, ids, masks.detach().cpu().bool().numpy()[keep]

    def _tracked(self, pred: FramePrediction, size: tuple[int, int]) -> Instances | None:
        """The predicted instances with a track id (and masks), in the batch's coordinates."""
        found = pred.instances
        if found is None or found.track_ids is None or found.masks is None or not len(found):
            return None
        inst = _to_batch_coordinates(found, pred, size)
        return inst[inst.track_ids >= 0]  # type: ignore[operator]

    def _predicted(
        self, pred: FramePrediction, size: tuple[int, int]
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(class, track id) of the tracked predicted instances and their disjoint index map."""
        inst = self._tracked(pred, size)
        none = np.zeros(0, np.int64)
        if inst is None:
            return none, none, np.zeros(size, np.int64)
        classes, ids, masks = self._valid(inst, inst.masks)  # type: ignore[arg-type]
        scores = (
            inst.scores.cpu().numpy()[self._in_range(inst)] if inst.scores is not None else None
        )
        order = np.argsort(scores, kind="stable") if scores is not None else np.arange(len(ids))
        index = paint_instances(masks, order)
        present = np.isin(np.arange(1, len(ids) + 1), index)
        lut = np.zeros(len(ids) + 1, np.int64)
        lut[1:][present] = np.arange(1, int(present.sum()) + 1)
        return classes[present], ids[present], lut[index]

    def compute(self) -> dict[str, float]:
        """Score the frames added so far (video by video), then every metric."""
        videos: dict[str, list[_MOTSFrame]] = defaultdict(list)
        for frame in self.frames:
            videos[frame.video].append(frame)
        n = len(self.config.categories)
        for name in sorted(videos):
            accs = [ClearAccumulator() for _ in range(n)]
            hota_steps: list[list[tuple]] = [[] for _ in range(n)]
            for f in sorted(videos[name], key=lambda f: f.frame):
                add_frame_objects(accs, hota_steps, f.gt, f.pred, f.ious, f.iofs)
            self._finish_video(accs, hota_steps)
        self.frames = []
        return super().compute() | self.ap_metrics()
