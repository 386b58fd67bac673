"""Writers of the canonical format: predictions (and pseudo labels) as Scalabel frames + bitmasks.

Boxes, instance masks (RLE), poses (graph nodes), track ids and tags go into the Scalabel frames;
dense maps go into PNGs named after the frame (`<stem>.png`), in the folder and encoding their
data field declares (`structures.fields`), so that `drivemtl eval-files` and the official toolkit
can score them: `masks/sem_seg`, `masks/drivable`, `masks/lane` (one-byte lane encoding),
`masks/ins_seg` (RGBA), and KITTI-style 16-bit `depth/` and `normals/` PNGs.

MOTS (instances with `track_ids`): in `predictions.json` an instance's label id is its track id
and an untracked one (id < 0) gets a negative id, never a track's (the box convention). The MOTS
outputs proper hold **only tracked instances**, their masks made disjoint by painting from the
lowest to the highest score (the official MOTS evaluation refuses overlapping masks): Scalabel
frames with RLE labels whose id is the track id (`mots.json`, `mots_frame`), and RGBA bitmasks
`masks/seg_track/<stem>.png` with instance id = track id + 1 (0 is background).

Box tracking (boxes with `track_ids`: the MOT detections, else the MOTS instances):
`box_track.json` holds, for every frame, only the tracked boxes (track id >= 0, label id = the
track id), written when some frame carried track ids. Flow: `flow/<stem>.png`, KITTI 16-bit
(u, v, valid), value = flow * 64 + 2**15, every finite vector valid.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from torch import Tensor

from drivemtl.data.bitmasks import mask_to_rle
from drivemtl.data.field_codecs import codec_of
from drivemtl.data.png_codecs import encode_flow, encode_instance_rgba, write_png
from drivemtl.structures.bdd import DETECTION_CLASSES_10, POSE_JOINTS, TAG_ATTRIBUTES
from drivemtl.structures.fields import fields_of_kind
from drivemtl.structures.instances import Instances
from drivemtl.structures.predictions import FramePrediction
from drivemtl.structures.scalabel import (
    Box2D,
    Frame,
    Graph,
    Label,
    Node,
    save_frames,
    skeleton_edges,
)

INSTANCE_FOLDER = "masks/ins_seg"  # RGBA instance bitmasks (official BDD100K prediction layout)
MOTS_FOLDER = "masks/seg_track"  # RGBA MOTS bitmasks, instance id = track id + 1
FLOW_FOLDER = "flow"  # KITTI 16-bit flow PNGs


def _np(value: Tensor) -> np.ndarray:
    return value.detach().cpu().numpy()


def _box_labels(
    instances: Instances,
    class_names: Sequence[str],
    start: int,
    with_masks: bool,
    min_score: float = 0.0,
    min_joint_score: float | None = None,
) -> list[Label]:
    labels = []
    boxes = _np(instances.boxes)
    classes = _np(instances.classes)
    scores = _np(instances.scores) if instances.scores is not None else None
    tracks = _np(instances.track_ids) if instances.track_ids is not None else None
    keypoints = _np(instances.keypoints) if instances.keypoints is not None else None
    for i in range(len(instances)):
        if scores is not None and scores[i] < min_score:
            continue
        ident = start + i
        if tracks is not None:  # a track's id; an untracked box a negative one, never a track's
            ident = int(tracks[i]) if tracks[i] >= 0 else -(start + i + 1)
        x1, y1, x2, y2 = (float(v) for v in boxes[i])
        cls = int(classes[i])
        if not 0 <= cls < len(class_names):
            raise ValueError(f"class index {cls} is outside the {len(class_names)} class names")
        label = Label(
            id=str(ident),
            category=class_names[cls],
            score=None if scores is None else float(scores[i]),
            box2d=Box2D(x1=x1, y1=y1, x2=max(x1, x2), y2=max(y1, y2)),
        )
        if with_masks and instances.masks is not None:
            label.rle = mask_to_rle(_np(instances.masks[i]).astype(bool))
        if keypoints is not None:
            kept = [
                (j, float(x), float(y), float(score))
                for j, (x, y, score) in enumerate(keypoints[i])
                if min_joint_score is None or score >= min_joint_score
            ]
            nodes = [
                Node(location=(x, y), category=POSE_JOINTS[j], id=f"{ident}-{j}", score=score,
                     visibility="V")
                for j, x, y, score in kept
            ]  # fmt: skip
            edges = skeleton_edges({j: f"{ident}-{j}" for j, *_ in kept})
            label.graph = Graph(nodes=nodes, edges=edges, type="Pose2D-18Joints_Pred")
        labels.append(label)
    return labels


def prediction_to_frame(
    prediction: FramePrediction,
    class_names: Sequence[str] = DETECTION_CLASSES_10,
    tasks: Collection[str] | None = None,
    min_score: float = 0.0,
    min_joint_score: float | None = None,
) -> Frame:
    """The Scalabel frame of one prediction: tags, boxes (+ RLE masks, + pose graphs).

    `tasks` limits what is written (default: every predicted task); boxes scoring below
    `min_score` and joints below `min_joint_score` are left out (the pseudo-label rules).
    """
    meta = prediction.meta

    def wanted(task: str) -> bool:
        return tasks is None or task in tasks

    groups = (
        ("detection", prediction.detections, False),
        ("instance", prediction.instances, True),
        ("pose", prediction.poses, False),
    )
    labels: list[Label] = []
    for task, instances, with_masks in groups:
        if instances is not None and wanted(task):
            labels += _box_labels(
                instances, class_names, len(labels), with_masks, min_score, min_joint_score
            )
    attributes = None
    if prediction.tags is not None and wanted("tagging"):
        tags = _np(prediction.tags).astype(int)
        attributes = {
            name: values[int(tags[k])] for k, (name, values) in enumerate(TAG_ATTRIBUTES.items())
        }
    return Frame(
        name=meta.name,
        videoName=meta.video,
        frameIndex=meta.frame_index,
        attributes=attributes,
        labels=labels,
    )


def _stem(name: str) -> str:
    return Path(name).with_suffix("").as_posix()


def write_dense(prediction: FramePrediction, out_dir: Path) -> list[Path]:
    """Write the frame's dense predictions as BDD bitmasks / 16-bit PNGs; returns the files.

    Every declared dense field with a `prediction_path` that the prediction carries is encoded
    with its codec into `<prediction_path>/<stem>.png`; instance masks go into one RGBA bitmask.
    """
    stem = _stem(prediction.meta.name)
    written = []

    def put(folder: str, array: np.ndarray) -> None:
        path = out_dir / folder / f"{stem}.png"
        write_png(path, array)
        written.append(path)

    for spec in fields_of_kind("dense"):
        value = prediction.get(spec.name)
        if value is not None and spec.prediction_path is not None:
            put(spec.prediction_path, codec_of(spec).encode(_np(value), spec))
    if prediction.flow is not None:
        flow = _np(prediction.flow)
        put(FLOW_FOLDER, encode_flow(flow, np.isfinite(flow).all(axis=0)))
    if prediction.instances is not None and prediction.instances.masks is not None:
        put(INSTANCE_FOLDER, _instance_bitmask(prediction.instances))
        if prediction.instances.track_ids is not None:
            put(MOTS_FOLDER, _mots_bitmask(prediction.instances))
    return written


def tracked_masks(instances: Instances) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(index into `instances`, track id, disjoint [K, H, W] mask) of the tracked instances:
    masks painted from the lowest to the highest score, those left without pixels dropped."""
    if instances.track_ids is None or instances.masks is None:
        raise ValueError("MOTS output needs instances with masks and track ids")
    masks = _np(instances.masks).astype(bool)
    ids = _np(instances.track_ids).astype(np.int64)
    scores = _np(instances.scores) if instances.scores is not None else np.zeros(len(masks))
    owner = np.full(masks.shape[-2:], -1, dtype=np.int64)
    for i in np.argsort(scores, kind="stable"):
        if ids[i] >= 0:
            owner[masks[i]] = i
    kept = np.array([i for i in range(len(masks)) if ids[i] >= 0 and (owner == i).any()], int)
    disjoint = owner[None] == kept[:, None, None]
    return kept, ids[kept], disjoint


def _mots_bitmask(instances: Instances) -> np.ndarray:
    """The MOTS RGBA bitmask of the tracked instances (instance id = track id + 1)."""
    kept, ids, masks = tracked_masks(instances)
    height, width = masks.shape[-2:] if len(kept) else _np(instances.masks).shape[-2:]
    category = np.full((height, width), -1, dtype=np.int64)
    instance_id = np.zeros((height, width), dtype=np.int64)
    classes = _np(instances.classes)
    for k, i in enumerate(kept):
        category[masks[k]] = int(classes[i])
        instance_id[masks[k]] = int(ids[k]) + 1
    return encode_instance_rgba(category, instance_id)


def mots_frame(
    prediction: FramePrediction, class_names: Sequence[str] = DETECTION_CLASSES_10
) -> Frame:
    """The Scalabel MOTS frame of one prediction: one RLE label per tracked instance (id = track
    id), masks disjoint; an empty frame when the prediction has no tracked instances."""
    meta = prediction.meta
    labels: list[Label] = []
    inst = prediction.instances
    if inst is not None and inst.masks is not None and inst.track_ids is not None:
        kept, ids, masks = tracked_masks(inst)
        boxes, classes = _np(inst.boxes), _np(inst.classes)
        scores = _np(inst.scores) if inst.scores is not None else None
        for k, i in enumerate(kept):
            cls = int(classes[i])
            if not 0 <= cls < len(class_names):
                raise ValueError(f"class index {cls} is outside the {len(class_names)} class names")
            x1, y1, x2, y2 = (float(v) for v in boxes[i])
            labels.append(
                Label(
                    id=str(int(ids[k])),
                    category=class_names[cls],
                    score=None if scores is None else float(scores[i]),
                    box2d=Box2D(x1=x1, y1=y1, x2=max(x1, x2), y2=max(y1, y2)),
                    rle=mask_to_rle(masks[k]),
                )
            )
    return Frame(name=meta.name, videoName=meta.video, frameIndex=meta.frame_index, labels=labels)


def tracked_boxes(prediction: FramePrediction) -> Instances | None:
    """The prediction's boxes with track ids: the detections' (MOT), else the instances'
    (MOTS); None when neither carries track ids."""
    for instances in (prediction.detections, prediction.instances):
        if instances is not None and instances.track_ids is not None:
            return instances
    return None


def box_track_frame(
    prediction: FramePrediction, class_names: Sequence[str] = DETECTION_CLASSES_10
) -> Frame | None:
    """The Scalabel box-tracking frame of one prediction: one box label per tracked box (track
    id >= 0, label id = str(track id)) of `tracked_boxes`; None when there are none."""
    boxes = tracked_boxes(prediction)
    if boxes is None:
        return None
    keep = boxes.track_ids >= 0
    tracked = Instances(
        boxes=boxes.boxes[keep],
        classes=boxes.classes[keep],
        scores=None if boxes.scores is None else boxes.scores[keep],
        track_ids=boxes.track_ids[keep],
    )
    meta = prediction.meta
    labels = _box_labels(tracked, class_names, 0, with_masks=False)
    return Frame(name=meta.name, videoName=meta.video, frameIndex=meta.frame_index, labels=labels)


def _instance_bitmask(instances: Instances) -> np.ndarray:
    """Paint instances from lowest to highest score into one RGBA bitmask (ids 1..N)."""
    masks = _np(instances.masks).astype(bool)
    height, width = masks.shape[-2:]
    category = np.full((height, width), -1, dtype=np.int64)
    ids = np.zeros((height, width), dtype=np.int64)
    scores = _np(instances.scores) if instances.scores is not None else np.zeros(len(masks))
    classes = _np(instances.classes)
    for i in np.argsort(scores, kind="stable"):
        category[masks[i]] = int(classes[i])
        ids[masks[i]] = int(i) + 1
    return encode_instance_rgba(category, ids)


@dataclass
class PredictionWriter:
    """Collects frames and dense maps while predicting; `close()` writes `predictions.json`."""

    out_dir: Path
    class_names: Sequence[str] = DETECTION_CLASSES_10
    frames: list[Frame] = field(default_factory=list)
    mots_frames: list[Frame] = field(default_factory=list)
    box_track_frames: list[Frame] = field(default_factory=list)
    tracked: bool = False  # some frame carried track ids

    def add(self, prediction: FramePrediction) -> None:
        """Record one frame's prediction (dense maps are written at once)."""
        meta = prediction.meta
        self.frames.append(prediction_to_frame(prediction, self.class_names))
        box_track = box_track_frame(prediction, self.class_names)
        self.tracked |= box_track is not None
        self.box_track_frames.append(
            box_track
            or Frame(name=meta.name, videoName=meta.video, frameIndex=meta.frame_index, labels=[])
        )
        inst = prediction.instances
        if inst is not None and inst.masks is not None and inst.track_ids is not None:
            self.mots_frames.append(mots_frame(prediction, self.class_names))
        write_dense(prediction, self.out_dir)

    def close(self) -> Path:
        """Write `predictions.json` (Scalabel list of frames), `box_track.json` (the tracked
        boxes of every frame) when some frame carried track ids, and `mots.json` (the MOTS
        frames) when some frame had tracked instance masks; returns the path of
        `predictions.json`."""
        path = self.out_dir / "predictions.json"
        save_frames(self.frames, path)
        if self.tracked:
            save_frames(self.box_track_frames, self.out_dir / "box_track.json")
        if self.mots_frames:
            save_frames(self.mots_frames, self.out_dir / "mots.json")
        return path
