"""Multi-object tracking metrics as the BDD100K / Scalabel toolkit reports them.

CLEAR (MOTA, MOTP, FP, FN, IDSw, MT, PT, ML, FM) and Identity (IDF1) follow the event rules of
the motmetrics accumulator that Scalabel uses, per video and per class: keep last frame's
correspondences when still valid, Hungarian matching on 1 - IoU (IoU >= 0.5) for the rest, a switch
when an object's partner changes; unmatched predictions covering a crowd / ignored box by more than
half of their area are dropped. Per-class, super-category and overall rows are pooled over videos;
the `AVERAGE` row (and mMOTA / mIDF1 / mMOTP) averages the leaf classes' rates and sums their
counts with NaN and +-inf counted as 0, as the toolkit does (a class with false positives but no
ground truth has MOTA = -inf and adds 0 to the mean).
HOTA / DetA / AssA come from TrackEval's implementation on the same per-class data.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from dataclasses import dataclass, field, replace
from itertools import pairwise
from typing import ClassVar

import numpy as np
from scipy.optimize import linear_sum_assignment

from drivemtl.evaluation.base import EVALUATORS, EvaluationInputError, check_same_type
from drivemtl.evaluation.coco import PRED_NOT_IN_GT, CocoEvaluator, _to_batch_coordinates
from drivemtl.evaluation.config import LabelConfig, default_config
from drivemtl.structures import bdd
from drivemtl.structures.batch import Batch
from drivemtl.structures.instances import Instances
from drivemtl.structures.predictions import FramePrediction
from drivemtl.structures.scalabel import Box2D, Frame, Label

IOU_THRESHOLD = 0.5
IGNORE_IOF_THRESHOLD = 0.5
COUNT_METRICS = ("FP", "FN", "IDSw", "MT", "PT", "ML", "FM")  # summed in the AVERAGE row


def _assign(costs: np.ndarray) -> list[tuple[int, int]]:
    """Min-cost assignment with NaN = forbidden: most feasible pairs first, then least cost."""
    if costs.size == 0:
        return []
    valid = np.isfinite(costs)
    if not valid.any():
        return []
    c = np.abs(costs[valid]).max() + 1
    large = 2 * min(costs.shape) * c + 1
    rows, cols = linear_sum_assignment(np.where(valid, costs, large))
    return [(int(r), int(k)) for r, k in zip(rows, cols, strict=True) if valid[r, k]]


def box_iou_distance(gts: np.ndarray, preds: np.ndarray, max_distance: float) -> np.ndarray:
    """1 - IoU of [x, y, w, h] boxes; NaN where the distance exceeds `max_distance`."""
    g = gts.astype(np.float64)[:, None, :]
    p = preds.astype(np.float64)[None, :, :]
    iw = np.clip(np.minimum(g[..., 0] + g[..., 2], p[..., 0] + p[..., 2]) - np.maximum(g[..., 0], p[..., 0]), 0, None)  # fmt: skip
    ih = np.clip(np.minimum(g[..., 1] + g[..., 3], p[..., 1] + p[..., 3]) - np.maximum(g[..., 1], p[..., 1]), 0, None)  # fmt: skip
    inter = iw * ih
    union = g[..., 2] * g[..., 3] + p[..., 2] * p[..., 3] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        dist = 1.0 - inter / union
    dist[~(dist <= max_distance)] = np.nan
    return dist


def intersection_over_area(preds: np.ndarray, regions: np.ndarray) -> np.ndarray:
    """Fraction of each predicted [x, y, w, h] box's area inside each region box (float64)."""
    p = preds.astype(np.float64)[:, None, :]
    r = regions.astype(np.float64)[None, :, :]
    w = np.minimum(p[..., 0] + p[..., 2], r[..., 0] + r[..., 2]) - np.maximum(p[..., 0], r[..., 0])
    h = np.minimum(p[..., 1] + p[..., 3], r[..., 1] + r[..., 3]) - np.maximum(p[..., 1], r[..., 1])
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.maximum(w, 0) * np.maximum(h, 0) / (p[..., 2] * p[..., 3])
    return out


@dataclass
class ClearCounts:
    """Summable CLEAR / Identity statistics of one accumulator (one video x class) or a pool."""

    objects: int = 0
    predictions: int = 0
    matches: int = 0
    switches: int = 0
    false_positives: int = 0
    misses: int = 0
    distance_sum: float = 0.0
    mostly_tracked: int = 0
    partially_tracked: int = 0
    mostly_lost: int = 0
    fragmentations: int = 0
    id_true_positives: int = 0

    def __iadd__(self, other: ClearCounts) -> ClearCounts:
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))
        return self

    def metrics(self) -> dict[str, float]:
        """MOTA / MOTP / IDF1 in percent (NaN / inf where the toolkit's division gives them)."""
        detections = self.matches + self.switches
        with np.errstate(divide="ignore", invalid="ignore"):
            mota = 1.0 - np.true_divide(self.misses + self.switches + self.false_positives, self.objects)  # fmt: skip
            motp = np.true_divide(self.distance_sum, detections)
            idf1 = np.true_divide(2 * self.id_true_positives, self.objects + self.predictions)
        return {
            "MOTA": float(mota) * 100,
            "MOTP": (1.0 - float(motp)) * 100,
            "IDF1": float(idf1) * 100,
            "FP": self.false_positives,
            "FN": self.misses,
            "IDSw": self.switches,
            "MT": self.mostly_tracked,
            "PT": self.partially_tracked,
            "ML": self.mostly_lost,
            "FM": self.fragmentations,
        }


@dataclass
class ClearAccumulator:
    """Per-frame CLEAR events of one video and class (the motmetrics MOTAccumulator rules)."""

    frame: int = -1
    pairing: dict[int, int] = field(default_factory=dict)  # object -> last matched hypothesis
    # per object: list of (frame, tracked?) ; per hypothesis: frames present; pair co-occurrences
    history: dict[int, list[bool]] = field(default_factory=lambda: defaultdict(list))
    hyp_frames: Counter[int] = field(default_factory=Counter)
    pair_hits: Counter[tuple[int, int]] = field(default_factory=Counter)
    counts: ClearCounts = field(default_factory=ClearCounts)
    events: int = 0

    def update(self, oids: np.ndarray, hids: np.ndarray, dists: np.ndarray) -> None:
        """Add one frame: object ids [N], hypothesis ids [M], distances [N, M] (NaN = no pair)."""
        self.frame += 1
        n, m = len(oids), len(hids)
        self.events += max(n + m, 1)
        raw = dists.reshape(n, m).astype(np.float64)
        dists = raw.copy()
        for i, j in zip(*np.where(np.isfinite(dists)), strict=True):
            self.pair_hits[(int(oids[i]), int(hids[j]))] += 1
        for h in set(int(h) for h in hids):
            self.hyp_frames[h] += 1
        o_done = np.zeros(n, bool)
        h_done = np.zeros(m, bool)
        matched: list[tuple[int, int, bool]] = []
        if n and m:
            for i in range(n):  # 1. keep last correspondences that are still valid
                o = int(oids[i])
                if o not in self.pairing:
                    continue
                js = np.where(~h_done & (hids == self.pairing[o]))[0]
                if js.size and np.isfinite(dists[i, js[0]]):
                    o_done[i], h_done[js[0]] = True, True
                    matched.append((i, int(js[0]), False))
            dists[o_done, :] = np.nan
            dists[:, h_done] = np.nan
            for i, j in _assign(dists):  # 2. the rest by minimum total distance
                o, h = int(oids[i]), int(hids[j])
                switch = o in self.pairing and self.pairing[o] != h
                matched.append((i, j, switch))
                o_done[i], h_done[j] = True, True
        for i, j, switch in matched:
            o, h = int(oids[i]), int(hids[j])
            self.pairing[o] = h
            self.counts.distance_sum += float(raw[i, j])
            if switch:
                self.counts.switches += 1
            else:
                self.counts.matches += 1
        self.counts.misses += int((~o_done).sum())
        self.counts.false_positives += int((~h_done).sum())
        self.counts.objects += n
        self.counts.predictions += m
        for i in range(n):
            self.history[int(oids[i])].append(bool(o_done[i]))

    def finish(self) -> ClearCounts:
        """Counts including track-level figures (MT / PT / ML / FM) and the global ID matching."""
        counts = ClearCounts(**vars(self.counts))
        for states in self.history.values():
            ratio = sum(states) / len(states)
            if ratio >= 0.8:
                counts.mostly_tracked += 1
            elif ratio >= 0.2:
                counts.partially_tracked += 1
            else:
                counts.mostly_lost += 1
            tracked = [k for k, s in enumerate(states) if s]
            if tracked:
                span = states[tracked[0] : tracked[-1] + 1]
                counts.fragmentations += sum(1 for a, b in pairwise(span) if a and not b)
        counts.id_true_positives = self._id_true_positives()
        return counts

    def _id_true_positives(self) -> int:
        if not self.pair_hits:
            return 0
        oids = sorted({o for o, _ in self.pair_hits})
        hids = sorted({h for _, h in self.pair_hits})
        weight = np.zeros((len(oids), len(hids)))
        o_idx = {o: k for k, o in enumerate(oids)}
        h_idx = {h: k for k, h in enumerate(hids)}
        for (o, h), hits in self.pair_hits.items():
            weight[o_idx[o], h_idx[h]] = hits
        rows, cols = linear_sum_assignment(weight, maximize=True)
        return int(weight[rows, cols].sum())


def _label_box(label: Label) -> list[float] | None:
    b = label.box2d
    if b is None:
        return None
    return [b.x1, b.y1, b.x2 - b.x1 + 1, b.y2 - b.y1 + 1]


def _track_id(label: Label, ids: dict[str, int] | None, what: str, frame: Frame) -> int:
    """A label's track id: its own integer id when `ids` is None, else its entry in `ids`
    (unseen ids get the next number)."""
    if ids is None:
        if not label.id.lstrip("-").isdigit():
            raise EvaluationInputError(
                f"{what} frame {frame.name!r}: track id {label.id!r} is not an integer"
            )
        return int(label.id)
    return ids.setdefault(label.id, len(ids) + 1)


def _is_ignored(label: Label) -> bool:
    attrs = label.attributes or {}
    return bool(attrs.get("crowd", False)) or bool(attrs.get("ignored", False))


@dataclass
class _ParsedFrame:
    boxes: np.ndarray  # [N, 4] float64 xywh
    classes: np.ndarray  # [N] int
    ids: np.ndarray  # [N] int
    ignore_boxes: np.ndarray  # [K, 4] float64


class BoxTrackEvaluator:
    """MOT metrics of Scalabel box-tracking frames, grouped by `videoName`."""

    task = "mot"

    def __init__(self, config: LabelConfig | None = None, strict: bool = True) -> None:
        self.config = config or default_config("box_track")
        self.strict = strict
        self.skipped: Counter[str] = Counter()
        # class index -> list of per-video counts
        self.per_class: list[list[ClearCounts]] = [[] for _ in self.config.categories]
        self.hota_data: list[list[dict]] = [[] for _ in self.config.categories]

    def reset(self) -> None:
        """Forget all videos."""
        self.__init__(self.config, self.strict)  # type: ignore[misc]

    def merge(self, other: BoxTrackEvaluator) -> None:
        """Add another evaluator's videos."""
        check_same_type(self, other)
        for mine, theirs in zip(self.per_class, other.per_class, strict=True):
            mine.extend(theirs)
        for mine, theirs in zip(self.hota_data, other.hota_data, strict=True):
            mine.extend(theirs)
        self.skipped.update(other.skipped)

    def _known_category(self, frame: Frame, label: Label, what: str) -> bool:
        """Whether the label's category is evaluated; an unknown one raises (strict) or is
        counted as skipped (not strict)."""
        if label.category in self.config.categories:
            return True
        if self.strict:
            raise EvaluationInputError(
                f"{what} frame {frame.name!r}, label {label.id!r}: unknown category "
                f"{label.category!r} (known: {', '.join(self.config.categories)}); "
                "without --strict such labels are skipped with a warning"
            )
        self.skipped[f"unknown category {label.category!r}"] += 1
        return False

    def _parse(self, frame: Frame, ids: dict[str, int] | None, what: str) -> _ParsedFrame:
        boxes, classes, track_ids, ignores = [], [], [], []
        for label in frame.labels or []:
            box = _label_box(label)
            if box is None:
                continue
            if not self._known_category(frame, label, what):
                continue
            if _is_ignored(label):
                ignores.append(box)
                continue
            boxes.append(box)
            classes.append(self.config.categories.index(label.category))
            track_ids.append(_track_id(label, ids, what, frame))
        return _ParsedFrame(
            np.asarray(boxes, np.float64).reshape(-1, 4),
            np.asarray(classes, np.int64),
            np.asarray(track_ids, np.int64),
            np.asarray(ignores, np.float64).reshape(-1, 4),
        )

    def update_frames(self, gt_frames: list[Frame], pred_frames: list[Frame]) -> None:
        """Add whole videos: ground truth and predictions, matched by frame name."""
        gt_videos = _group_videos(gt_frames, "ground truth")
        gt_names = {f.name for f in gt_frames}
        preds: dict[str, Frame] = {}
        for frame in pred_frames:
            if frame.name not in gt_names:
                if self.strict:
                    raise EvaluationInputError(
                        f"prediction frame {frame.name!r} is not in the ground truth"
                        " (without --strict such frames are left out with a warning)"
                    )
                self.skipped[PRED_NOT_IN_GT] += 1
                continue
            preds[frame.name] = frame
        for frames in gt_videos.values():
            self._add_video(frames, preds)

    def _add_video(self, frames: list[Frame], preds: dict[str, Frame]) -> None:
        gt_ids = _integer_ids(frames)
        num_classes = len(self.config.categories)
        accs = [ClearAccumulator() for _ in range(num_classes)]
        hota_steps: list[list[tuple]] = [[] for _ in range(num_classes)]
        for frame in frames:
            gt = self._parse(frame, gt_ids, "ground truth")
            pred_frame = preds.get(frame.name, Frame(name=frame.name))
            pd = self._parse(pred_frame, None, "prediction")
            for c in range(num_classes):
                g_sel, p_sel = gt.classes == c, pd.classes == c
                g_boxes, g_ids = gt.boxes[g_sel], gt.ids[g_sel]
                p_boxes, p_ids = pd.boxes[p_sel], pd.ids[p_sel]
                dists = box_iou_distance(g_boxes, p_boxes, 1 - IOU_THRESHOLD)
                if len(gt.ignore_boxes):
                    unmatched = np.ones(len(p_boxes), bool)
                    for _, j in _assign(dists):
                        unmatched[j] = False
                    iof = intersection_over_area(p_boxes, gt.ignore_boxes)
                    covered = (iof > IGNORE_IOF_THRESHOLD).any(axis=1)
                    keep = ~(unmatched & covered)
                    p_boxes, p_ids, dists = p_boxes[keep], p_ids[keep], dists[:, keep]
                if dists.shape != (0, 0):
                    accs[c].update(g_ids, p_ids, dists)
                similarity = np.nan_to_num(1.0 - box_iou_distance(g_boxes, p_boxes, 1.0), nan=0.0)
                hota_steps[c].append((g_ids, p_ids, similarity))
        self._finish_video(accs, hota_steps)

    def _finish_video(self, accs: list[ClearAccumulator], hota_steps: list[list[tuple]]) -> None:
        for c in range(len(self.config.categories)):
            if accs[c].events:
                self.per_class[c].append(accs[c].finish())
            if any(len(g) or len(p) for g, p, _ in hota_steps[c]):
                self.hota_data[c].append(_hota_sequence(hota_steps[c]))

    def compute(self) -> dict[str, float]:
        """Overall, per-class (`MOTA/car`), super-category and class-averaged (`mMOTA`) numbers."""
        names = self.config.categories
        rows: dict[str, dict[str, float]] = {}
        for c, name in enumerate(names):
            rows[name] = _pool(self.per_class[c]).metrics()
        for group, members in self.config.super_categories.items():
            pooled = [x for m in members if m in names for x in self.per_class[names.index(m)]]
            rows[group] = _pool(pooled).metrics()
        overall = _pool([x for per in self.per_class for x in per]).metrics()
        result: dict[str, float] = dict(overall)
        rows["AVERAGE"] = _class_average([rows[n] for n in names])
        for key in ("MOTA", "MOTP", "IDF1"):
            result["m" + key] = rows["AVERAGE"][key]
        for row, metrics in rows.items():
            for key, value in metrics.items():
                result[f"{key}/{row}"] = value
        result.update(self._hota())
        return result

    def _hota(self) -> dict[str, float]:
        from trackeval.metrics import HOTA

        metric = HOTA()
        per_class = {}
        for c, name in enumerate(self.config.categories):
            if not self.hota_data[c]:
                continue
            seqs = {str(k): metric.eval_sequence(d) for k, d in enumerate(self.hota_data[c])}
            per_class[name] = metric.combine_sequences(seqs)
        if not per_class:
            return {"HOTA": math.nan, "DetA": math.nan, "AssA": math.nan}
        combined = metric.combine_classes_det_averaged(per_class)
        averaged = metric.combine_classes_class_averaged(per_class)
        out = {}
        for key in ("HOTA", "DetA", "AssA"):
            out[key] = float(np.mean(combined[key])) * 100
            out["m" + key] = float(np.mean(averaged[key])) * 100
        return out


def _class_average(rows: list[dict[str, float]]) -> dict[str, float]:
    """The toolkit's AVERAGE row: mean of rates and sum of counts over classes, NaN / inf as 0."""
    out: dict[str, float] = {}
    for key in rows[0]:
        values = np.array([row[key] for row in rows], dtype=np.float64)
        values = np.nan_to_num(values, nan=0.0, posinf=0.0, neginf=0.0)
        out[key] = int(values.sum()) if key in COUNT_METRICS else float(values.mean())
    return out


def _pool(items: list[ClearCounts]) -> ClearCounts:
    total = ClearCounts()
    for item in items:
        total += item
    return total


def _group_videos(frames: list[Frame], what: str) -> dict[str, list[Frame]]:
    videos: dict[str, list[Frame]] = defaultdict(list)
    for frame in frames:
        if frame.videoName is None:
            raise EvaluationInputError(f"{what} frame {frame.name!r} has no videoName")
        videos[frame.videoName].append(frame)
    return {name: sorted(videos[name], key=lambda f: f.frameIndex or 0) for name in sorted(videos)}


def _integer_ids(frames: list[Frame]) -> dict[str, int] | None:
    """Track ids of one video as integers (sorted-string order when any id is not a number)."""
    ids = sorted({label.id for frame in frames for label in frame.labels or []})
    if all(i.isdigit() for i in ids):
        return {i: int(i) for i in ids}
    return {i: k + 1 for k, i in enumerate(ids)}


def _hota_sequence(steps: list[tuple]) -> dict:
    """One video of one class in TrackEval's input layout (contiguous ids, IoU similarities).

    `steps` holds per frame (ground-truth ids, predicted ids, IoU matrix [G, P] with 0 for none).
    """
    gt_map: dict[int, int] = {}
    tr_map: dict[int, int] = {}
    data: dict = {"gt_ids": [], "tracker_ids": [], "similarity_scores": []}
    num_gt = num_tr = 0
    for g_ids, p_ids, similarity in steps:
        data["gt_ids"].append(
            np.array([gt_map.setdefault(int(i), len(gt_map)) for i in g_ids], int)
        )
        data["tracker_ids"].append(np.array([tr_map.setdefault(int(i), len(tr_map)) for i in p_ids], int))  # fmt: skip
        data["similarity_scores"].append(similarity)
        num_gt += len(g_ids)
        num_tr += len(p_ids)
    data.update(num_gt_ids=len(gt_map), num_tracker_ids=len(tr_map), num_gt_dets=num_gt,
                num_tracker_dets=num_tr, num_timesteps=len(steps))  # fmt: skip
    return data


class ModelFedTrackEvaluator(BoxTrackEvaluator):
    """Base of the tracking evaluators `drivemtl eval` feeds batch by batch: the model's class
    names, the official config `config_name` restricted to them, and the frames added since the
    last `compute` in the list attributes named by `pending` (kept by `merge`, cleared by
    `reset`). `ap` scores the tracked objects as COCO AP (`ap_iou_type`: boxes for MOT, masks
    for MOTS), VTD's MOT AP / MOTS AP: every track a frame outputs is a detection with its score,
    ground truth without regard to ids, `ignore` objects as crowd regions."""

    config_name: ClassVar[str]
    pending: ClassVar[tuple[str, ...]]
    ap_iou_type: ClassVar[str]

    def __init__(
        self, categories: list[str] | tuple[str, ...] = bdd.THING_CLASSES, strict: bool = True
    ) -> None:
        self.categories = list(categories)
        config = replace(default_config(self.config_name), categories=list(categories))
        super().__init__(config, strict)
        for name in self.pending:
            setattr(self, name, [])
        self.ap = CocoEvaluator(self.ap_iou_type, self.categories)  # type: ignore[arg-type]

    def reset(self) -> None:
        """Forget all frames and videos."""
        self.__init__(self.categories, self.strict)  # type: ignore[misc]

    def merge(self, other: BoxTrackEvaluator) -> None:
        """Add another evaluator's frames and videos."""
        super().merge(other)
        assert type(other) is type(self)
        for name in self.pending:
            getattr(self, name).extend(getattr(other, name))
        self.ap.merge(other.ap)  # type: ignore[attr-defined]

    def add_ap_frame(self, pred: FramePrediction, target: Instances, size: tuple[int, int],
                     tracked: Instances | None) -> None:  # fmt: skip
        """Add a frame's ground truth and tracked objects (batch coordinates) to the AP."""
        self.ap.add_frame(pred.meta.name, size, target, tracked)

    def ap_metrics(self) -> dict[str, float]:
        """`AP`, `AP50`, `AP75`, ... and per class `AP/<name>` of the tracked objects."""
        if not self.ap.images:
            return {}
        return {k: v for k, v in self.ap.compute().items() if k.startswith("AP")}


@EVALUATORS.register("mot")
class MOTEvaluator(ModelFedTrackEvaluator):
    """`BoxTrackEvaluator` fed batch by batch with model predictions (`drivemtl eval`).

    Ground truth: the instances (with track ids) of the samples labelled for `mot`; predictions:
    `FramePrediction.detections` with track ids >= 0 (untracked and suppressed boxes are not
    tracks), mapped into the batch's coordinates. Frames are kept until `compute`, which scores
    them video by video; class indices name `categories` (the model's MOT classes).
    """

    task = "mot"
    config_name = "box_track"
    pending = ("gt_frames", "pred_frames")
    ap_iou_type = "bbox"
    gt_frames: list[Frame]
    pred_frames: list[Frame]

    def update(self, predictions: list[FramePrediction], batch: Batch) -> None:
        """Add the labelled samples' ground truth and tracked predictions."""
        labeled = batch.is_labeled(self.task)
        for i, pred in enumerate(predictions):
            target = batch.instances[i]
            if not bool(labeled[i]) or target is None or target.track_ids is None:
                continue
            meta = pred.meta
            video = meta.video if meta.video is not None else meta.name
            frame = meta.frame_index if meta.frame_index is not None else 0
            gt = self._labels(target, ground_truth=True, prefix=f"{frame}-")
            self.gt_frames.append(Frame(name=meta.name, videoName=video, frameIndex=frame,
                                        labels=gt))  # fmt: skip
            found = pred.detections
            labels: list[Label] = []
            tracked = None
            if found is not None and found.track_ids is not None:
                inst = _to_batch_coordinates(found, pred, batch.image_sizes[i])
                tracked = inst[inst.track_ids >= 0]
                labels = self._labels(tracked, ground_truth=False)
            self.pred_frames.append(Frame(name=meta.name, videoName=video, frameIndex=frame,
                                          labels=labels))  # fmt: skip
            self.add_ap_frame(pred, target, batch.image_sizes[i], tracked)

    def _labels(self, inst: Instances, ground_truth: bool, prefix: str = "") -> list[Label]:
        labels = []
        boxes = inst.boxes.detach().double().cpu().tolist()
        ids = inst.track_ids.cpu().tolist()  # type: ignore[union-attr]
        ignore = inst.ignore.cpu().tolist() if inst.ignore is not None else [False] * len(inst)
        for k, (cls, box) in enumerate(zip(inst.classes.cpu().tolist(), boxes, strict=True)):
            if not 0 <= cls < len(self.categories):
                continue
            ident = str(ids[k]) if ids[k] >= 0 else f"untracked-{prefix}{k}"
            x1, y1, x2, y2 = box
            attributes = {"crowd": True} if ground_truth and ignore[k] else None
            labels.append(Label(id=ident, category=self.categories[cls], attributes=attributes,
                                box2d=Box2D(x1=x1, y1=y1, x2=max(x1, x2), y2=max(y1, y2))))  # fmt: skip
        return labels

    def compute(self) -> dict[str, float]:
        """Score the frames added so far (video by video), then every metric."""
        if self.gt_frames:
            self.update_frames(self.gt_frames, self.pred_frames)
            self.gt_frames, self.pred_frames = [], []
        return super().compute() | self.ap_metrics()
