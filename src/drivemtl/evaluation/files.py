"""`eval-files`: evaluate prediction files in the BDD100K / Scalabel formats like the toolkit does.

Scalabel JSON (a file, or a folder of per-video files) for det / ins_seg / pose / box_track /
seg_track (RLE) / tagging and RLE semantic or drivable labels; folders of bitmask PNGs (matched by
file name) for sem_seg / drivable / lane, and of RGBA bitmasks in per-video sub-folders for
seg_track. Returns the official summary keys in percent.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from faster_coco_eval.core import mask as mask_utils

from drivemtl.evaluation.base import EvaluationInputError
from drivemtl.evaluation.coco import CocoEvaluator
from drivemtl.evaluation.config import LabelConfig, default_config, load_label_config
from drivemtl.evaluation.lanes import LaneEvaluator
from drivemtl.evaluation.seg_track import SegTrackEvaluator
from drivemtl.evaluation.segmentation import SegmentationEvaluator
from drivemtl.evaluation.tagging import TaggingEvaluator, tag_attributes
from drivemtl.evaluation.tracking import BoxTrackEvaluator
from drivemtl.structures import bdd
from drivemtl.structures.scalabel import Frame, load_frames

FILE_TASKS: tuple[str, ...] = (
    "det", "ins_seg", "pose", "sem_seg", "drivable", "lane", "box_track", "seg_track", "tagging",
)  # fmt: skip


@dataclass
class FileEvalResult:
    """Official summary numbers and what lenient mode skipped (reason -> count)."""

    task: str
    metrics: dict[str, float]
    skipped: Counter[str] = field(default_factory=Counter)


def evaluate_files(
    task: str,
    gt: str | Path,
    pred: str | Path,
    config: str | Path | None = None,
    strict: bool = True,
) -> FileEvalResult:
    """Evaluate `pred` against `gt` for `task`; `strict=False` skips bad entries with counts."""
    if task not in FILE_TASKS:
        raise EvaluationInputError(
            f"unknown task {task!r}; expected one of {', '.join(FILE_TASKS)}"
        )
    gt, pred = Path(gt), Path(pred)
    for path, what in ((gt, "ground truth"), (pred, "predictions")):
        if not path.exists():
            raise EvaluationInputError(f"{path}: {what} not found")
    label_config = _label_config(task, config)
    if task == "lane":
        return _lanes(gt, pred, strict)
    if task in ("sem_seg", "drivable") and gt.is_dir():
        return _bitmask_segmentation(task, gt, pred, label_config, strict)
    if task == "seg_track" and gt.is_dir() and not any(gt.glob("*.json")):
        return _bitmask_seg_track(gt, pred, label_config, strict)
    gt_frames = label_config.map_frames(load_frames(gt))
    pred_frames = label_config.map_frames(load_frames(pred))
    _check_unique(gt_frames, gt)
    _check_unique(pred_frames, pred)
    if task in ("det", "ins_seg", "pose"):
        iou_type = {"det": "bbox", "ins_seg": "segm", "pose": "keypoints"}[task]
        image_size = label_config.image_size or (720, 1280)
        evaluator = CocoEvaluator(
            iou_type, label_config.categories, label_config.pose_sigmas, image_size, strict
        )  # type: ignore[arg-type]
        evaluator.update_frames(gt_frames, pred_frames)
        return FileEvalResult(task, evaluator.compute(), evaluator.skipped)
    if task in ("box_track", "seg_track"):
        tracker = (BoxTrackEvaluator if task == "box_track" else SegTrackEvaluator)(
            label_config, strict
        )
        tracker.update_frames(gt_frames, pred_frames)
        return FileEvalResult(task, tracker.compute(), tracker.skipped)
    if task == "tagging":
        attributes = tag_attributes(label_config) if config is not None else None
        tagger = TaggingEvaluator(attributes, strict)
        skipped = _unmatched(gt_frames, pred_frames, strict)
        tagger.update_frames(gt_frames, pred_frames)
        return FileEvalResult(task, tagger.compute_official(), skipped + tagger.skipped)
    return _rle_segmentation(task, gt_frames, pred_frames, label_config, strict)


def _label_config(task: str, config: str | Path | None) -> LabelConfig:
    if config is not None:
        return load_label_config(config)
    if task in ("lane", "tagging"):
        return LabelConfig(categories=[])
    return default_config(task)


def _check_unique(frames: list[Frame], path: Path) -> None:
    seen: set[str] = set()
    for frame in frames:
        if frame.name in seen:
            raise EvaluationInputError(f"{path}: frame {frame.name!r} appears twice")
        seen.add(frame.name)


def _unmatched(gt_frames: list[Frame], pred_frames: list[Frame], strict: bool) -> Counter[str]:
    names = {f.name for f in gt_frames}
    extra = [f.name for f in pred_frames if f.name not in names]
    if extra and strict:
        raise EvaluationInputError(
            f"{len(extra)} prediction frames are not in the ground truth, e.g. {extra[0]!r}"
            " (use --lenient to skip them)"
        )
    return Counter({"prediction frame not in ground truth": len(extra)} if extra else {})


def _rle_mask(
    frame: Frame, categories: list[str], strict: bool, skipped: Counter[str], is_pred: bool
) -> np.ndarray | None:
    """Class map of a frame's RLE labels (255 elsewhere); ground-truth labels of other categories
    stay ignored as in the toolkit, unknown predicted categories are an error unless lenient."""
    out: np.ndarray | None = None
    for label in frame.labels or []:
        if label.rle is None:
            continue
        if label.category not in categories and not is_pred:
            continue
        if label.category not in categories:
            if strict:
                raise EvaluationInputError(
                    f"frame {frame.name!r}, label {label.id!r}: unknown category {label.category!r}"
                    " (use --lenient to skip such labels)"
                )
            skipped[f"unknown category {label.category!r}"] += 1
            continue
        rle = {"counts": label.rle.counts.encode("ascii"), "size": list(label.rle.size)}
        mask = mask_utils.decode(rle)
        if out is None:
            out = np.full(mask.shape, bdd.IGNORE_INDEX, dtype=np.uint8)
        elif out.shape != mask.shape:
            raise EvaluationInputError(f"frame {frame.name!r}: RLE sizes differ between labels")
        out[mask > 0] = categories.index(label.category)
    return out


def _rle_segmentation(
    task: str, gt_frames: list[Frame], pred_frames: list[Frame], config: LabelConfig, strict: bool
) -> FileEvalResult:
    skipped = _unmatched(gt_frames, pred_frames, strict)
    preds = {f.name: f for f in pred_frames}
    evaluator = SegmentationEvaluator(config.categories)
    for frame in gt_frames:
        gt = _rle_mask(frame, config.categories, strict, skipped, is_pred=False)
        if gt is None:
            if config.image_size is None:
                raise EvaluationInputError(f"frame {frame.name!r}: no RLE labels and no image size")
            gt = np.full(config.image_size, bdd.IGNORE_INDEX, dtype=np.uint8)
        pred_frame = preds.get(frame.name)
        pred = (
            None
            if pred_frame is None
            else _rle_mask(pred_frame, config.categories, strict, skipped, is_pred=True)
        )
        if pred is None:
            pred = np.full(gt.shape, bdd.IGNORE_INDEX, dtype=np.uint8)
        if pred.shape != gt.shape:
            raise EvaluationInputError(
                f"frame {frame.name!r}: prediction {pred.shape} vs ground truth {gt.shape}"
            )
        evaluator.add(gt, pred)
    return FileEvalResult(task, evaluator.compute(), skipped)


def _pngs(folder: Path) -> dict[str, Path]:
    if not folder.is_dir():
        raise EvaluationInputError(f"{folder}: expected a folder of bitmask PNGs")
    return {p.relative_to(folder).as_posix(): p for p in sorted(folder.rglob("*.png"))}


def _read_mask(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise EvaluationInputError(f"{path}: cannot read bitmask")
    if image.ndim != 2:
        raise EvaluationInputError(
            f"{path}: expected a one-channel bitmask, got shape {image.shape}"
        )
    return image


def _paired_pngs(
    gt: Path, pred: Path, strict: bool
) -> tuple[list[tuple[Path, Path | None]], Counter[str]]:
    gts, preds = _pngs(gt), _pngs(pred)
    if not gts:
        raise EvaluationInputError(f"{gt}: folder holds no *.png bitmasks")
    extra = sorted(set(preds) - set(gts))
    skipped: Counter[str] = Counter()
    if extra:
        if strict:
            raise EvaluationInputError(
                f"{len(extra)} prediction bitmasks have no ground truth, e.g. {extra[0]!r}"
                " (use --lenient to skip them)"
            )
        skipped["prediction bitmask without ground truth"] = len(extra)
    return [(gts[name], preds.get(name)) for name in sorted(gts)], skipped


def _bitmask_segmentation(
    task: str, gt: Path, pred: Path, config: LabelConfig, strict: bool
) -> FileEvalResult:
    pairs, skipped = _paired_pngs(gt, pred, strict)
    evaluator = SegmentationEvaluator(config.categories)
    for gt_path, pred_path in pairs:
        gt_mask = _read_mask(gt_path)
        if pred_path is None:
            pred_mask = np.full(gt_mask.shape, bdd.IGNORE_INDEX, dtype=np.uint8)
        else:
            pred_mask = _read_mask(pred_path)
        if pred_mask.shape != gt_mask.shape:
            raise EvaluationInputError(
                f"{pred_path}: size {pred_mask.shape} differs from {gt_path} {gt_mask.shape}"
            )
        evaluator.add(gt_mask, pred_mask)
    return FileEvalResult(task, evaluator.compute(), skipped)


def _lanes(gt: Path, pred: Path, strict: bool) -> FileEvalResult:
    pairs, skipped = _paired_pngs(gt, pred, strict)
    evaluator = LaneEvaluator()
    for gt_path, pred_path in pairs:
        evaluator.add_files(gt_path, pred_path)
    return FileEvalResult("lane", evaluator.compute(), skipped)


def _bitmask_seg_track(gt: Path, pred: Path, config: LabelConfig, strict: bool) -> FileEvalResult:
    """RGBA bitmasks: one sub-folder per video (files directly in `gt` form one video)."""
    pairs, skipped = _paired_pngs(gt, pred, strict)
    videos: dict[str, list[tuple[Path, Path | None]]] = {}
    for gt_path, pred_path in pairs:
        videos.setdefault(gt_path.parent.relative_to(gt).as_posix(), []).append(
            (gt_path, pred_path)
        )
    tracker = SegTrackEvaluator(config, strict)
    for name in sorted(videos):
        frames = sorted(videos[name], key=lambda pair: pair[0].name)
        tracker.add_bitmask_video([g for g, _ in frames], [p for _, p in frames])
    return FileEvalResult("seg_track", tracker.compute(), skipped)
