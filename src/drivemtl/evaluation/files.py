"""`eval-files`: evaluate prediction files in the BDD100K / Scalabel formats like the toolkit does.

Scalabel JSON (a file, or a folder of per-video files) for det / ins_seg / pose / box_track /
seg_track (RLE) / tagging and RLE semantic or drivable labels; folders of bitmask PNGs (matched by
file name) for sem_seg / drivable / lane, and of RGBA bitmasks in per-video sub-folders for
seg_track. Lanes may also be Scalabel JSON with poly2d lane labels, on either side (drawn into
lane bitmasks exactly as the toolkit's `to_mask` does, see `lane_json`). Returns the official
summary keys in percent.

Frames that do not line up are treated as the official evaluators treat them, with one warning per
case (count and an example): prediction frames without ground truth are left out, missing
predictions count as empty, a prediction frame given twice counts once (the last copy), and a
ground-truth frame given twice is evaluated as two images (det / ins_seg / pose / sem_seg /
drivable, as the official COCO and segmentation evaluators do; tracking refuses it, as theirs
does). `strict=True` (`--strict`) makes every such case an error instead.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from faster_coco_eval.core import mask as mask_utils

from drivemtl.evaluation.base import EvaluationInputError
from drivemtl.evaluation.coco import PRED_NOT_IN_GT, CocoEvaluator
from drivemtl.evaluation.config import LabelConfig, default_config, load_label_config
from drivemtl.evaluation.lane_json import (
    DEFAULT_SIZE,
    is_lane_json,
    lane_frames,
    rasterise_lane_frame,
)
from drivemtl.evaluation.lanes import LaneEvaluator, read_lane_png
from drivemtl.evaluation.seg_track import SegTrackEvaluator
from drivemtl.evaluation.segmentation import SegmentationEvaluator
from drivemtl.evaluation.tagging import TaggingEvaluator, tag_attributes
from drivemtl.evaluation.tracking import BoxTrackEvaluator
from drivemtl.log import get_logger
from drivemtl.structures import bdd
from drivemtl.structures.scalabel import Frame, load_frames

FILE_TASKS: tuple[str, ...] = (
    "det", "ins_seg", "pose", "sem_seg", "drivable", "lane", "box_track", "seg_track", "tagging",
)  # fmt: skip

LOG = get_logger(__name__)


@dataclass
class FileEvalResult:
    """Official summary numbers, what was skipped or merged (reason -> count) and, per reason,
    an example frame name where one is known."""

    task: str
    metrics: dict[str, float]
    skipped: Counter[str] = field(default_factory=Counter)
    examples: dict[str, str] = field(default_factory=dict)

    def warnings(self) -> list[str]:
        """One line per reason: count, reason and an example."""
        lines = []
        for reason, count in sorted(self.skipped.items()):
            example = self.examples.get(reason)
            lines.append(f"{count} {reason}" + (f", e.g. {example!r}" if example else ""))
        return lines


def evaluate_files(
    task: str,
    gt: str | Path,
    pred: str | Path,
    config: str | Path | None = None,
    strict: bool = False,
) -> FileEvalResult:
    """Evaluate `pred` against `gt` for `task` as the official toolkit does; frames that do not
    line up are skipped / merged with one warning each, or an error with `strict=True`."""
    result = _evaluate(task, Path(gt), Path(pred), config, strict)
    for line in result.warnings():
        LOG.warning("%s: %s", task, line)
    return result


def _evaluate(
    task: str, gt: Path, pred: Path, config: str | Path | None, strict: bool
) -> FileEvalResult:
    if task not in FILE_TASKS:
        raise EvaluationInputError(
            f"unknown task {task!r}; expected one of {', '.join(FILE_TASKS)}"
        )
    for path, what in ((gt, "ground truth"), (pred, "predictions")):
        if not path.exists():
            raise EvaluationInputError(f"{path}: {what} not found")
    label_config = _label_config(task, config)
    if task == "lane":
        return _lanes(gt, pred, strict, label_config.image_size)
    if task in ("sem_seg", "drivable") and gt.is_dir():
        # the official bitmask evaluation uses the fixed BDD100K classes whatever the config
        return _bitmask_segmentation(task, gt, pred, _label_config(task, None), strict)
    if task == "seg_track" and gt.is_dir() and not any(gt.glob("*.json")):
        return _bitmask_seg_track(gt, pred, label_config, strict)
    gt_frames = label_config.map_frames(load_frames(gt))
    pred_frames = label_config.map_frames(load_frames(pred))
    notes = _frame_notes(task, gt_frames, pred_frames, gt, pred, strict)
    result = _evaluate_frames(task, gt_frames, pred_frames, label_config, config, strict)
    for reason, (count, example) in notes.items():
        result.skipped[reason] += count
        result.examples[reason] = example
    gt_names = {f.name for f in gt_frames}
    extra = [f.name for f in pred_frames if f.name not in gt_names]
    if extra and PRED_NOT_IN_GT in result.skipped:
        result.examples[PRED_NOT_IN_GT] = extra[0]
    return result


def _evaluate_frames(
    task: str,
    gt_frames: list[Frame],
    pred_frames: list[Frame],
    label_config: LabelConfig,
    config: str | Path | None,
    strict: bool,
) -> FileEvalResult:
    if task in ("det", "ins_seg", "pose"):
        iou_type = {"det": "bbox", "ins_seg": "segm", "pose": "keypoints"}[task]
        image_size = label_config.image_size or (720, 1280)
        evaluator = CocoEvaluator(
            iou_type, label_config.categories, label_config.pose_sigmas, image_size, strict,
            per_class_all=True,
        )  # type: ignore[arg-type]  # fmt: skip
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
    if task == "drivable":  # the official drivable config: background is no class (ignored)
        return LabelConfig([c for c in bdd.DRIVABLE_CLASSES if c != "background"], {},
                           default_config(task).image_size)  # fmt: skip
    return default_config(task)


def _twice(frames: list[Frame]) -> list[str]:
    """Names given more than once (each once, in first-repeat order)."""
    counts = Counter(f.name for f in frames)
    return [name for name, n in counts.items() if n > 1]


def _frame_notes(
    task: str, gt_frames: list[Frame], pred_frames: list[Frame], gt: Path, pred: Path, strict: bool
) -> dict[str, tuple[int, str]]:
    """Duplicate and missing frames: reason -> (count, example name); errors where the official
    evaluator refuses the case (a repeated ground-truth frame in tracking) or with `strict`."""
    notes: dict[str, tuple[int, str]] = {}
    gt_twice = _twice(gt_frames)
    if gt_twice:
        if strict or task in ("box_track", "seg_track"):
            raise EvaluationInputError(
                f"{gt}: {len(gt_twice)} frame name(s) appear more than once, e.g. "
                f"{gt_twice[0]!r}"
                + ("" if strict else " (the official tracking evaluation refuses this too)")
            )
        notes["ground-truth frame name(s) given more than once, each copy evaluated as its own "
              "image as the official evaluator does"] = (len(gt_twice), gt_twice[0])  # fmt: skip
    pred_twice = _twice(pred_frames)
    if pred_twice:
        if strict:
            raise EvaluationInputError(
                f"{pred}: {len(pred_twice)} frame name(s) appear more than once, e.g. "
                f"{pred_twice[0]!r}"
            )
        notes["prediction frame name(s) given more than once, the last copy counts"] = (
            len(pred_twice), pred_twice[0],
        )  # fmt: skip
    pred_names = {f.name for f in pred_frames}
    missing = sorted({f.name for f in gt_frames} - pred_names)
    if missing and task != "tagging":  # tagging reports its own missing predictions
        notes["ground-truth frame(s) without a prediction frame, scored as empty predictions"] = (
            len(missing), missing[0],
        )  # fmt: skip
    return notes


def _unmatched(gt_frames: list[Frame], pred_frames: list[Frame], strict: bool) -> Counter[str]:
    names = {f.name for f in gt_frames}
    extra = [f.name for f in pred_frames if f.name not in names]
    if extra and strict:
        raise EvaluationInputError(
            f"{len(extra)} prediction frames are not in the ground truth, e.g. {extra[0]!r}"
            " (without --strict they are left out, as the official evaluator does)"
        )
    return Counter({PRED_NOT_IN_GT: len(extra)} if extra else {})


def _rle_mask(
    frame: Frame, categories: list[str], strict: bool, skipped: Counter[str], is_pred: bool
) -> np.ndarray | None:
    """Class map of a frame's RLE labels (255 elsewhere); ground-truth labels of other categories
    stay ignored as in the toolkit, unknown predicted categories are skipped (an error if strict)."""
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
                    " (without --strict such labels are skipped with a warning)"
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
    missing = sorted(set(gts) - set(preds))
    skipped: Counter[str] = Counter()
    if extra:
        if strict:
            raise EvaluationInputError(
                f"{len(extra)} prediction bitmasks have no ground truth, e.g. {extra[0]!r}"
                " (without --strict they are left out, as the official evaluator does)"
            )
        skipped[f"prediction bitmask(s) without ground truth, left out, e.g. {extra[0]!r}"] = len(
            extra
        )
    if missing:
        skipped[f"ground-truth bitmask(s) without a prediction, scored as the official blank "
                f"map (all 0; for lanes the official decoding reads that as lane everywhere), e.g. "
                f"{missing[0]!r}"] = len(missing)  # fmt: skip
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


def _lanes(gt: Path, pred: Path, strict: bool, size: tuple[int, int] | None) -> FileEvalResult:
    """Lane bitmask folders and / or Scalabel JSON with poly2d lanes (drawn as to_mask does)."""
    if not (is_lane_json(gt) or is_lane_json(pred)):
        pairs, skipped = _paired_pngs(gt, pred, strict)
        evaluator = LaneEvaluator()
        for gt_path, pred_path in pairs:
            evaluator.add_files(gt_path, pred_path)
        return FileEvalResult("lane", evaluator.compute(), skipped)
    gts = lane_frames(gt) if is_lane_json(gt) else _pngs(gt)
    preds = lane_frames(pred) if is_lane_json(pred) else _pngs(pred)
    if not gts:
        raise EvaluationInputError(f"{gt}: holds no lane frames")
    skipped: Counter[str] = Counter()
    extra, missing = sorted(set(preds) - set(gts)), sorted(set(gts) - set(preds))
    if extra and strict:
        raise EvaluationInputError(
            f"{len(extra)} lane predictions have no ground truth, e.g. {extra[0]!r}"
            " (without --strict they are left out, as the official evaluator does)"
        )
    if extra:
        reason = f"lane prediction(s) without ground truth, left out, e.g. {extra[0]!r}"
        skipped[reason] = len(extra)
    if missing:
        reason = (
            "lane ground truth without a prediction, scored as the official evaluator does"
            f" (an all-zero byte map: every pixel a crosswalk), e.g. {missing[0]!r}"
        )
        skipped[reason] = len(missing)
    notes: Counter[str] = Counter()
    evaluator = LaneEvaluator()
    for name in sorted(gts):
        items = [gts[name], preds.get(name)]
        pngs = {i: read_lane_png(item) for i, item in enumerate(items) if isinstance(item, Path)}
        canvas = size or next(iter(m.shape for m in pngs.values()), None) or DEFAULT_SIZE
        maps = [
            pngs[i] if i in pngs else None if item is None else _lane_frame(item, canvas, notes)
            for i, item in enumerate(items)
        ]
        if maps[1] is not None and maps[0].shape != maps[1].shape:
            raise EvaluationInputError(
                f"lane frame {name!r}: ground truth is {maps[0].shape}, prediction {maps[1].shape}"
            )
        evaluator.add_bytes(maps[0], maps[1])
    return FileEvalResult("lane", evaluator.compute(), skipped + notes)


def _lane_frame(frame: Frame, canvas: tuple[int, int], notes: Counter[str]) -> np.ndarray:
    """Draw one JSON frame's lanes; notes frames whose own `size` is not the canvas."""
    if frame.size is not None and (frame.size.height, frame.size.width) != canvas:
        notes[f"frames whose size differs from the lane canvas {canvas} (set imageSize)"] += 1
    return rasterise_lane_frame(frame, canvas, notes)


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
