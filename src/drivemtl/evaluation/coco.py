"""COCO-style AP for detection, instance segmentation and pose, as the BDD100K toolkit reports it.

Ground truth and predictions become COCO annotations the way Scalabel's converter builds them
(box width = x2 - x1 + 1, `iscrowd` = crowd or ignored, keypoint visibility V=2 / N=1, frames
sorted by name); faster-coco-eval then matches and accumulates, and the official summary keys
(`AP`, `AP50`, ..., `AR100`, per class `AP/<name>`) are read from its precision / recall arrays.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from faster_coco_eval import COCO, COCOeval_faster
from faster_coco_eval.core import mask as mask_utils

from drivemtl.evaluation.base import EVALUATORS, EvaluationInputError, check_same_type
from drivemtl.log import get_logger
from drivemtl.structures import bdd
from drivemtl.structures.batch import Batch
from drivemtl.structures.instances import Instances
from drivemtl.structures.predictions import FramePrediction
from drivemtl.structures.scalabel import Frame, Label

LOG = get_logger(__name__)

IouType = Literal["bbox", "segm", "keypoints"]
PRED_NOT_IN_GT = "prediction frame(s) not in the ground truth, left out"

# (key, metric, iou threshold, area range, max detections index: -1 = largest)
_BOX_SUMMARY: tuple[tuple[str, str, float | None, str, int], ...] = (
    ("AP", "precision", None, "all", -1),
    ("AP50", "precision", 0.5, "all", -1),
    ("AP75", "precision", 0.75, "all", -1),
    ("APs", "precision", None, "small", -1),
    ("APm", "precision", None, "medium", -1),
    ("APl", "precision", None, "large", -1),
    ("AR1", "recall", None, "all", 0),
    ("AR10", "recall", None, "all", 1),
    ("AR100", "recall", None, "all", 2),
    ("ARs", "recall", None, "small", -1),
    ("ARm", "recall", None, "medium", -1),
    ("ARl", "recall", None, "large", -1),
)
_POSE_SUMMARY: tuple[tuple[str, str, float | None, str, int], ...] = (
    ("AP", "precision", None, "all", -1),
    ("AP50", "precision", 0.5, "all", -1),
    ("AP75", "precision", 0.75, "all", -1),
    ("APm", "precision", None, "medium", -1),
    ("APl", "precision", None, "large", -1),
    ("AR", "recall", None, "all", -1),
    ("AR50", "recall", 0.5, "all", -1),
    ("AR75", "recall", 0.75, "all", -1),
    ("ARm", "recall", None, "medium", -1),
    ("ARl", "recall", None, "large", -1),
)


def box2d_to_coco(x1: float, y1: float, x2: float, y2: float) -> list[float]:
    """Scalabel box (inclusive pixel corners) as a COCO [x, y, w, h] with w = x2 - x1 + 1."""
    return [x1, y1, x2 - x1 + 1, y2 - y1 + 1]


def _is_crowd(label: Label) -> bool:
    attrs = label.attributes or {}
    return bool(attrs.get("crowd", False)) or bool(attrs.get("ignored", False))


def _graph_keypoints(label: Label) -> list[float]:
    assert label.graph is not None
    pose_graph = (label.graph.type or "").startswith("Pose2D")
    keypoints: list[float] = []
    for node in label.graph.nodes:
        if node.score is not None:
            c = float(node.score)
        elif pose_graph and node.visibility == "V":
            c = 2.0
        elif pose_graph and node.visibility == "N":
            c = 1.0
        else:
            c = 0.0
        keypoints.extend([float(node.location[0]), float(node.location[1]), c])
    return keypoints


@dataclass
class _Image:
    height: int
    width: int
    gts: list[dict[str, Any]] = field(default_factory=list)
    dts: list[dict[str, Any]] = field(default_factory=list)


class CocoEvaluator:
    """AP / AR over frames for boxes ("bbox"), masks ("segm") or 18-joint poses ("keypoints")."""

    task = "detection"

    def __init__(
        self,
        iou_type: IouType = "bbox",
        categories: list[str] | tuple[str, ...] = bdd.DETECTION_CLASSES_10,
        sigmas: list[float] | tuple[float, ...] | None = None,
        image_size: tuple[int, int] = (720, 1280),
        strict: bool = True,
        per_class_all: bool = False,
    ) -> None:
        self.iou_type = iou_type
        self.per_class_all = per_class_all  # every summary key per class, as the toolkit
        self.categories = list(categories)
        self.sigmas = list(sigmas if sigmas is not None else bdd.POSE_SIGMAS)
        self.image_size = image_size
        self.strict = strict
        self.skipped: Counter[str] = Counter()
        self.other_gt: Counter[str] = Counter()  # GT labels of categories outside the config
        self.images: dict[str, _Image] = {}

    def reset(self) -> None:
        """Forget all frames."""
        self.images = {}
        self.skipped = Counter()
        self.other_gt = Counter()

    def merge(self, other: CocoEvaluator) -> None:
        """Add another evaluator's frames (a frame seen by both is an error)."""
        check_same_type(self, other)
        for name, image in other.images.items():
            if name in self.images:
                raise EvaluationInputError(f"frame {name!r} was evaluated twice")
            self.images[name] = image
        self.skipped.update(other.skipped)

    # ----------------------------------------------------------------- file side (Scalabel)
    def update_frames(self, gt_frames: list[Frame], pred_frames: list[Frame]) -> None:
        """Add Scalabel ground-truth frames and the predictions for them (matched by name).

        Ground-truth labels of categories outside the config are left out, as the official
        evaluator does, with one warning giving their counts per category. A ground-truth frame
        given twice is two images (both against the prediction of that name), as there."""
        key = _prediction_key(gt_frames, pred_frames)
        preds = _index_predictions(gt_frames, pred_frames, self.strict, self.skipped, key)
        before = sum(self.other_gt.values())
        for frame in gt_frames:
            name = frame.name
            if name in self.images and self.strict:
                raise EvaluationInputError(f"ground truth has frame {frame.name!r} twice")
            copy = 1
            while name in self.images:  # sorts right after the first copy, as the toolkit's
                name, copy = f"{frame.name}\x00{copy}", copy + 1  # stable sort keeps them
            h, w = self.image_size
            if frame.size is not None:
                h, w = frame.size.height, frame.size.width
            image = _Image(h, w)
            image.gts = self._labels_to_annotations(frame, frame.labels or [], is_pred=False)
            pred = preds.get(key(frame))
            if pred is not None and self.iou_type == "segm" and self._overlapping(pred):
                pred = None
            if pred is not None:
                image.dts = self._labels_to_annotations(pred, pred.labels or [], is_pred=True)
            self.images[name] = image
        if sum(self.other_gt.values()) > before:
            LOG.warning(
                "ground truth: %d label(s) of categories the config does not list left out, as "
                "the official evaluator does: %s",
                sum(self.other_gt.values()) - before, dict(self.other_gt),
            )  # fmt: skip

    def _labels_to_annotations(
        self, frame: Frame, labels: list[Label], is_pred: bool
    ) -> list[dict[str, Any]]:
        anns = []
        for label in labels:
            geometry = self._geometry(frame, label)
            if geometry is None:
                continue
            if self.iou_type == "keypoints":
                category_id = 1
            elif label.category in self.categories:
                category_id = self.categories.index(label.category) + 1
            elif is_pred:
                self._unknown(frame, label)
                continue
            else:  # ground truth of other categories is left out, as the toolkit does
                self.other_gt[str(label.category)] += 1
                continue
            ann: dict[str, Any] = {
                "category_id": category_id,
                "iscrowd": int(_is_crowd(label)),
                "ignore": 0,
                **geometry,
            }
            if is_pred:
                if label.score is None:
                    raise EvaluationInputError(
                        f"prediction frame {frame.name!r}, label {label.id!r}: no score"
                    )
                ann["score"] = float(label.score)
            anns.append(ann)
        return anns

    def _overlapping(self, frame: Frame) -> bool:
        """Whether a prediction frame's masks (of evaluated categories) overlap: the toolkit then
        drops all of that frame's predictions; an error when strict."""
        total: np.ndarray | None = None
        for label in frame.labels or []:
            if label.rle is None or label.category not in self.categories:
                continue
            mask = mask_utils.decode({"counts": label.rle.counts.encode("ascii"),
                                      "size": list(label.rle.size)}).astype(np.int32)  # fmt: skip
            total = mask if total is None else total + mask
        if total is None or not (total > 1).any():
            return False
        if self.strict:
            raise EvaluationInputError(
                f"prediction frame {frame.name!r}: masks overlap; without --strict the frame's "
                "predictions are dropped, as the official evaluator does"
            )
        self.skipped["prediction frame(s) with overlapping masks, their predictions dropped"] += 1
        return True

    def _unknown(self, frame: Frame, label: Label) -> None:
        if self.strict:
            raise EvaluationInputError(
                f"frame {frame.name!r}, label {label.id!r}: unknown category {label.category!r}"
                f" (known: {', '.join(self.categories)}); without --strict such labels are"
                " skipped with a warning"
            )
        self.skipped[f"unknown category {label.category!r}"] += 1

    def _geometry(self, frame: Frame, label: Label) -> dict[str, Any] | None:
        if self.iou_type == "bbox":
            if label.box2d is None:
                return None
            b = label.box2d
            bbox = box2d_to_coco(b.x1, b.y1, b.x2, b.y2)
            return {"bbox": bbox, "area": float(bbox[2] * bbox[3])}
        if self.iou_type == "segm":
            if label.rle is None:
                if label.poly2d is not None:
                    raise EvaluationInputError(
                        f"frame {frame.name!r}, label {label.id!r}: instance masks must be RLE"
                        " (poly2d masks are not supported; convert them to rle)"
                    )
                return None
            rle = {"counts": label.rle.counts.encode("ascii"), "size": list(label.rle.size)}
            return _rle_geometry(rle)
        if label.graph is None:
            return None
        geometry: dict[str, Any] = {"keypoints": _graph_keypoints(label)}
        geometry["num_keypoints"] = len(geometry["keypoints"]) // 3
        if label.box2d is not None:
            b = label.box2d
            bbox = box2d_to_coco(b.x1, b.y1, b.x2, b.y2)
            geometry.update(bbox=bbox, area=float(bbox[2] * bbox[3]))
        return geometry

    # ----------------------------------------------------------------- model side (tensors)
    def update(self, predictions: list[FramePrediction], batch: Batch) -> None:
        """Add model predictions against the batch's instances (labelled samples only)."""
        task = {"bbox": "detection", "segm": "instance", "keypoints": "pose"}[self.iou_type]
        labeled = batch.is_labeled(task)
        for i, pred in enumerate(predictions):
            if not bool(labeled[i]):
                continue
            found = {"bbox": pred.detections, "segm": pred.instances, "keypoints": pred.poses}
            inst = found[self.iou_type]
            size = batch.image_sizes[i]
            if inst is not None:
                inst = _to_batch_coordinates(inst, pred, size)
            self.add_frame(pred.meta.name, size, batch.instances[i], inst)

    def add_frame(self, name: str, size: tuple[int, int], target: Instances | None,
                  found: Instances | None) -> None:  # fmt: skip
        """Add one frame of `size` (H, W): ground truth `target` and predictions `found` (with
        scores), both in the batch's coordinates; a frame seen twice is an error."""
        if name in self.images:
            raise EvaluationInputError(f"frame {name!r} was evaluated twice")
        image = _Image(*size)
        if target is not None:
            image.gts = self._instances_to_annotations(target, name, is_pred=False)
        if found is not None:
            image.dts = self._instances_to_annotations(found, name, is_pred=True)
        self.images[name] = image

    def _instances_to_annotations(
        self, inst: Instances, name: str, is_pred: bool
    ) -> list[dict[str, Any]]:
        if is_pred and inst.scores is None and len(inst):
            raise EvaluationInputError(f"frame {name!r}: predicted instances carry no scores")
        boxes = inst.boxes.detach().cpu().double().numpy()
        classes = inst.classes.detach().cpu().numpy()
        ignore = inst.ignore.cpu().numpy() if inst.ignore is not None else np.zeros(len(inst), bool)
        anns = []
        for k in range(len(inst)):
            cls = int(classes[k])
            if self.iou_type == "keypoints":  # every pose is a person, whatever its class
                labelled = inst.keypoints is None or bool((inst.keypoints[k, :, 2] > 0).any())
                if not is_pred and not labelled:
                    continue  # an object without a pose label is no pose ground truth
            elif not 0 <= cls < len(self.categories):
                if not is_pred:  # ground truth of other categories is left out (toolkit rule)
                    continue
                raise EvaluationInputError(
                    f"frame {name!r}: class index {cls} outside 0..{len(self.categories) - 1}"
                )
            ann: dict[str, Any] = {
                "category_id": 1 if self.iou_type == "keypoints" else cls + 1,
                "iscrowd": int(ignore[k]),
                "ignore": 0,
            }
            bbox = box2d_to_coco(*boxes[k].tolist())
            ann.update(bbox=bbox, area=float(bbox[2] * bbox[3]))
            if self.iou_type == "segm":
                if inst.masks is None:
                    raise EvaluationInputError(f"frame {name!r}: instances carry no masks")
                mask = np.asfortranarray(inst.masks[k].detach().cpu().numpy().astype(np.uint8))
                ann.update(_rle_geometry(mask_utils.encode(mask)))
            elif self.iou_type == "keypoints":
                if inst.keypoints is None:
                    raise EvaluationInputError(f"frame {name!r}: instances carry no keypoints")
                kp = inst.keypoints[k].detach().cpu().double().numpy()
                ann["keypoints"] = kp.reshape(-1).tolist()
                ann["num_keypoints"] = int((kp[:, 2] > 0).sum())
            if is_pred:
                ann["score"] = float(inst.scores[k])  # type: ignore[index]
            anns.append(ann)
        return anns

    # ----------------------------------------------------------------- results
    def compute(self) -> dict[str, float]:
        """Official summary (percent); per class `AP/<name>`; NaN where nothing is defined."""
        summary_spec = _POSE_SUMMARY if self.iou_type == "keypoints" else _BOX_SUMMARY
        cats = ["pedestrian"] if self.iou_type == "keypoints" else self.categories
        names = sorted(self.images)
        if not names:
            result = {key: math.nan for key, *_ in summary_spec}
            result.update({f"{spec[0]}/{c}": math.nan for spec in self._per_class_spec(summary_spec)
                           for c in cats})  # fmt: skip
            return result
        gt_dataset, dt_anns = self._coco_dicts(names, cats)
        coco_gt = COCO(gt_dataset)
        if not dt_anns:
            # A detection in a category outside the evaluated ones: lets loadRes build an empty
            # result set, so categories with ground truth score 0 and the others stay NaN.
            dt_anns = [_placeholder_detection(self.iou_type, len(cats) + 1)]
        coco_dt = coco_gt.loadRes(dt_anns)
        kwargs: dict[str, Any] = {}
        if self.iou_type == "keypoints":
            kwargs.update(kpt_oks_sigmas=self.sigmas, use_area=True)
        coco_eval = COCOeval_faster(coco_gt, coco_dt, self.iou_type, **kwargs)
        coco_eval.params.imgIds = sorted(coco_gt.getImgIds())
        coco_eval.evaluate()
        coco_eval.accumulate()
        result = {
            key: _score(coco_eval, metric, iou, area, md, None)
            for key, metric, iou, area, md in summary_spec
        }
        for key, metric, iou, area, md in self._per_class_spec(summary_spec):
            for k, cat in enumerate(cats):
                result[f"{key}/{cat}"] = _score(coco_eval, metric, iou, area, md, k)
        return result

    def _per_class_spec(self, spec: tuple[tuple[str, str, float | None, str, int], ...]) -> tuple:
        """Summary keys reported per class: all of them in official mode (none for pose, as
        there), else just `AP`."""
        if not self.per_class_all:
            return spec[:1]
        return () if self.iou_type == "keypoints" else spec

    def _coco_dicts(
        self, names: list[str], cats: list[str]
    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        images, gts, dts = [], [], []
        for image_id, name in enumerate(names, start=1):
            image = self.images[name]
            images.append({"id": image_id, "file_name": name, "height": image.height,
                           "width": image.width})  # fmt: skip
            for ann in image.gts:
                gts.append({**ann, "id": len(gts) + 1, "image_id": image_id})
            for ann in image.dts:
                dts.append({**ann, "id": len(dts) + 1, "image_id": image_id})
        categories = [{"id": k + 1, "name": c} for k, c in enumerate(cats)]
        if self.iou_type == "keypoints":
            categories[0]["keypoints"] = list(bdd.POSE_JOINTS)
        return {"images": images, "annotations": gts, "categories": categories}, dts


def _placeholder_detection(iou_type: IouType, category_id: int) -> dict[str, Any]:
    ann: dict[str, Any] = {"id": 1, "image_id": 1, "category_id": category_id, "score": 0.0,
                           "bbox": [0.0, 0.0, 1.0, 1.0], "area": 1.0, "iscrowd": 0}  # fmt: skip
    if iou_type == "segm":
        ann.update(_rle_geometry(mask_utils.encode(np.ones((1, 1), order="F", dtype=np.uint8))))
    if iou_type == "keypoints":
        ann["keypoints"] = [0.0, 0.0, 0.0] * len(bdd.POSE_JOINTS)
    return ann


def _rle_geometry(rle: dict[str, Any]) -> dict[str, Any]:
    bbox = mask_utils.toBbox(rle).tolist()
    area = float(mask_utils.area(rle))
    counts = rle["counts"]
    segmentation = {"counts": counts.decode("ascii") if isinstance(counts, bytes) else counts,
                    "size": list(rle["size"])}  # fmt: skip
    return {"segmentation": segmentation, "bbox": bbox, "area": area}


def _score(
    coco_eval: COCOeval_faster,
    metric: str,
    iou: float | None,
    area: str,
    max_det_index: int,
    cat_index: int | None,
) -> float:
    """Mean of the valid (> -1) entries of precision [T,R,K,A,M] / recall [T,K,A,M], in percent."""
    p = coco_eval.params
    values = np.asarray(coco_eval.eval[metric])
    a = list(p.areaRngLbl).index(area)
    m = max_det_index if max_det_index >= 0 else len(p.maxDets) - 1
    if iou is not None:
        values = values[np.where(np.isclose(np.asarray(p.iouThrs), iou))[0]]
    if metric == "precision":
        values = values[:, :, :, a, m] if cat_index is None else values[:, :, cat_index, a, m]
    else:
        values = values[:, :, a, m] if cat_index is None else values[:, cat_index, a, m]
    valid = values[values > -1]
    return float(np.mean(valid)) * 100 if valid.size else math.nan


def _prediction_key(gt_frames: list[Frame], pred_frames: list[Frame]) -> Callable[[Frame], str]:
    """How the toolkit pairs frames: by name, or by `videoName/name` when prediction names repeat
    and every frame has a video name."""
    names = [f.name for f in pred_frames]
    if len(names) != len(set(names)) and all(f.videoName for f in [*gt_frames, *pred_frames]):
        return lambda frame: f"{frame.videoName}/{frame.name}"
    return lambda frame: frame.name


def _index_predictions(
    gt_frames: list[Frame],
    pred_frames: list[Frame],
    strict: bool,
    skipped: Counter[str],
    key: Callable[[Frame], str] = lambda frame: frame.name,
) -> dict[str, Frame]:
    """Predictions by `key`, the last of repeated ones winning as in the toolkit; frames missing
    from the ground truth are left out (counted), or an error when `strict`."""
    gt_keys = {key(f) for f in gt_frames}
    preds: dict[str, Frame] = {}
    for frame in pred_frames:
        if key(frame) not in gt_keys:
            if strict:
                raise EvaluationInputError(
                    f"prediction frame {frame.name!r} is not in the ground truth"
                    " (without --strict such frames are left out, as the official evaluator does)"
                )
            skipped[PRED_NOT_IN_GT] += 1
            continue
        if key(frame) in preds and strict:
            raise EvaluationInputError(f"predictions contain frame {frame.name!r} twice")
        preds[key(frame)] = frame
    return preds


def _to_batch_coordinates(
    inst: Instances, pred: FramePrediction, size: tuple[int, int]
) -> Instances:
    """Map predicted instances from original-image to the batch sample's coordinates."""
    meta = pred.meta
    sy, sx = meta.scale
    y0, x0 = meta.crop
    if (sy, sx) == (1.0, 1.0) and (y0, x0) == (0, 0) and not meta.flipped:
        return inst
    boxes = inst.boxes.clone().double()
    boxes[:, 0::2] = boxes[:, 0::2] * sx - x0
    boxes[:, 1::2] = boxes[:, 1::2] * sy - y0
    keypoints = inst.keypoints
    if keypoints is not None:
        keypoints = keypoints.clone().double()
        keypoints[..., 0] = keypoints[..., 0] * sx - x0
        keypoints[..., 1] = keypoints[..., 1] * sy - y0
    masks = inst.masks
    if masks is not None and len(inst) and tuple(masks.shape[-2:]) != size:
        masks = torch.nn.functional.interpolate(masks[:, None].float(), size=size, mode="nearest")[
            :, 0
        ].bool()
    return Instances(boxes=boxes, classes=inst.classes, track_ids=inst.track_ids, masks=masks,
                     keypoints=keypoints, scores=inst.scores, ignore=inst.ignore)  # fmt: skip


@EVALUATORS.register("detection")
class DetectionEvaluator(CocoEvaluator):
    """Box AP with the BDD detection categories."""

    task = "detection"

    def __init__(self, categories: list[str] | tuple[str, ...] = bdd.DETECTION_CLASSES_10,
                 strict: bool = True) -> None:  # fmt: skip
        super().__init__("bbox", categories, strict=strict)


@EVALUATORS.register("instance")
class InstanceSegEvaluator(CocoEvaluator):
    """Mask AP with the 8 BDD thing categories."""

    task = "instance"

    def __init__(self, categories: list[str] | tuple[str, ...] = bdd.THING_CLASSES,
                 strict: bool = True) -> None:  # fmt: skip
        super().__init__("segm", categories, strict=strict)


@EVALUATORS.register("pose")
class PoseEvaluator(CocoEvaluator):
    """Keypoint AP (OKS with the BDD 18-joint sigmas)."""

    task = "pose"

    def __init__(self, sigmas: list[float] | tuple[float, ...] = bdd.POSE_SIGMAS,
                 strict: bool = True) -> None:  # fmt: skip
        super().__init__("keypoints", ["pedestrian"], sigmas=sigmas, strict=strict)
