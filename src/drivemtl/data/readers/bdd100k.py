"""BDD100K / Scalabel reader: frame JSON + bitmask folders (real BDD100K and the synthetic world).

Default paths (relative to the set root) are the synthetic world's layout; real BDD100K sets point
`paths` at the official files, e.g. `labels: labels/det_20/det_{split}.json`,
`images: images/100k/{split}`, `drivable: labels/drivable/masks/{split}`. A frame's image is
`images/<name>` or `images/<video>/<name>`; its masks are the same relative path with `.png`.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import torch

from drivemtl.data.bitmasks import (
    FLAG_CROWD,
    FLAG_IGNORED,
    BitmaskInstances,
    decode_class_map,
    decode_instance_bitmask,
    decode_lanes,
    rle_to_mask,
)
from drivemtl.data.categories import SEMANTIC_IGNORED_NAMES, CategoryConfig, get_categories
from drivemtl.data.config import ImageSetConfig
from drivemtl.data.errors import DataError
from drivemtl.data.field_codecs import codec_of
from drivemtl.data.io import check_size, read_png
from drivemtl.data.png_codecs import decode_flow
from drivemtl.data.readers.base import READERS, FrameRecord, ImageSetReader
from drivemtl.data.readers.pseudo_merge import is_lane, is_object, merge_frame
from drivemtl.log import get_logger
from drivemtl.structures.bdd import (
    IGNORE_INDEX,
    LANE_CATEGORIES,
    LANE_DIRECTIONS,
    LANE_STYLES,
    POSE_JOINTS,
    SEMANTIC_CLASSES,
    TAG_ATTRIBUTES,
)
from drivemtl.structures.fields import task_fields
from drivemtl.structures.instances import Instances
from drivemtl.structures.sample import LaneLine, Sample
from drivemtl.structures.scalabel import (
    Frame,
    Label,
    ScalabelFormatError,
    load_frames,
    parse_frames,
)

INSTANCE_TASKS = frozenset({"detection", "mot", "instance", "mots", "pose"})
JSON_TASKS = frozenset({"tagging", "detection", "mot", "pose"})
TRACK_TASKS = frozenset({"mot", "mots"})  # tasks whose targets are the label ids as track ids
# Tasks this reader decodes itself; every other task's dense fields are read by their declared
# path and codec (`structures.fields`, `data.field_codecs`).
OWN_TASKS = INSTANCE_TASKS | {"tagging", "semantic", "lanes", "flow"}
INSTANCE_MASK_FOLDER = "masks/instance"  # RGBA instance bitmasks of `instance` / `mots`
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
LOG = get_logger(__name__)


def _lane_line(label: Label, path: Path, frame: str) -> list[LaneLine]:
    attrs = label.attributes or {}
    category = (label.category or "").removeprefix("lane/")
    if category not in LANE_CATEGORIES:
        category = str(attrs.get("laneCategory", attrs.get("laneType", category)))
    direction = str(attrs.get("laneDirection", "parallel"))
    style = str(attrs.get("laneStyle", "solid"))
    for value, allowed, what in (
        (category, LANE_CATEGORIES, "lane category"),
        (direction, LANE_DIRECTIONS, "laneDirection"),
        (style, LANE_STYLES, "laneStyle"),
    ):
        if value not in allowed:
            raise DataError(path, frame, f"label {label.id!r}: unknown {what} {value!r}")
    return [
        LaneLine(
            vertices=torch.tensor(poly.vertices, dtype=torch.float32).reshape(-1, 2),
            types=poly.types,
            category=LANE_CATEGORIES.index(category),
            direction=LANE_DIRECTIONS.index(direction),
            style=LANE_STYLES.index(style),
            closed=poly.closed,
        )
        for poly in label.poly2d or []
    ]


def _clip_box(box: list[float], size: tuple[int, int]) -> list[float] | None:
    """`box` (xyxy) clipped to an image of `size` (H, W); None when no area of it is inside."""
    h, w = size
    x1, x2 = (min(max(float(v), 0.0), float(w)) for v in (box[0], box[2]))
    y1, y2 = (min(max(float(v), 0.0), float(h)) for v in (box[1], box[3]))
    return [x1, y1, x2, y2] if x2 > x1 and y2 > y1 else None


def _poly_mask(label: Label, size: tuple[int, int]) -> np.ndarray:
    mask = np.zeros(size, dtype=np.uint8)
    for poly in label.poly2d or []:
        points = np.round(np.asarray(poly.vertices, dtype=np.float64)).astype(np.int32)
        if len(points) >= 3:
            cv2.fillPoly(mask, [points.reshape(-1, 1, 2)], 1)
    return mask.astype(bool)


@READERS.register("bdd100k")
class BDD100KReader(ImageSetReader):
    """Scalabel frame JSON (file, or folder of per-video files) plus BDD100K bitmask folders."""

    def __init__(
        self, set_name: str, cfg: ImageSetConfig, split: str, on_error: str = "raise"
    ) -> None:
        super().__init__(set_name, cfg, split, on_error)
        self.images_dir = self.path("images", "images")
        self.categories: CategoryConfig = get_categories(cfg.categories)
        self.dense_dirs = {
            task: Path(str(cfg.pseudo_labels[task]))
            if task in cfg.pseudo_labels
            else self.path(task, default)
            for task, default in self._mask_folders().items()
        }
        self.labels_path = self.path("labels", "labels.json")
        self.frames: list[Frame | None] = []
        self._index()
        self.check_clip_lengths(self.labels_path if self.labels_path.exists() else self.images_dir)
        self._track_ids = self._track_id_maps()

    def _mask_folders(self) -> dict[str, str]:
        """Task -> default folder of its PNG labels: instance bitmasks, and each set task's
        dense field with a declared path."""
        folders = {"instance": INSTANCE_MASK_FOLDER, "mots": INSTANCE_MASK_FOLDER}
        for task in {"semantic", "lanes", "flow"} | self.tasks:
            dense = [f for f in task_fields(task) if f.is_dense and f.path is not None]
            if dense and task not in folders:
                folders[task] = dense[0].path  # type: ignore[assignment]
        return folders

    # ----------------------------------------------------------------------------- indexing
    def _uses_json(self, pseudo: frozenset[str] = frozenset()) -> bool:
        """Whether the set's own label JSON is needed: for a JSON task not served by a JSON
        pseudo-label source (`pseudo`), or a mask task without its bitmask folder."""
        tasks = self.tasks - pseudo
        if tasks & JSON_TASKS:
            return True
        if "lanes" in tasks and not self.dense_dirs["lanes"].is_dir():
            return True
        return any(
            t in tasks and not self.dense_dirs[t].is_dir() for t in ("semantic", "instance", "mots")
        )

    def _load_json(self, path: Path) -> list[Frame]:
        if self.on_error == "skip":
            return self._load_json_skipping(path)
        try:
            return load_frames(path)
        except ScalabelFormatError as exc:
            raise DataError(None, None, str(exc)) from None

    def _load_json_skipping(self, path: Path) -> list[Frame]:
        """Like load_frames, but a frame that fails validation is logged and left out."""
        files = sorted(path.glob("*.json")) if path.is_dir() else [path]
        frames: list[Frame] = []
        for file in files:
            if not file.is_file():
                raise DataError(file, None, "label file not found")
            try:
                raw = json.loads(file.read_text(encoding="utf-8"))
            except json.JSONDecodeError as exc:
                raise DataError(file, None, f"malformed JSON: {exc}") from None
            items = raw.get("frames", [raw]) if isinstance(raw, dict) else raw
            if not isinstance(items, list):
                raise DataError(file, None, "expected a list of frames")
            for item in items:
                try:
                    frames.extend(parse_frames([item], file))
                except ScalabelFormatError as exc:
                    self.skipped_at_index.append(str(exc))
                    LOG.warning("skipping frame: %s", exc)
        return frames

    def _index(self) -> None:
        pseudo = self._load_pseudo_sources()
        if self._uses_json(frozenset(pseudo)) or self.labels_path.exists():
            self._index_json()
        else:
            self._index_images()
        self._unlabelled: list[frozenset[str]] = [frozenset()] * len(self.records)
        if pseudo:
            self._merge_pseudo(pseudo)

    def _index_json(self) -> None:
        """Frames and records from the set's Scalabel JSON (a frame listed twice, or no frame at
        all, is an error)."""
        seen: set[str] = set()
        loaded = self._load_json(self.labels_path)
        if not loaded:
            skipped = len(self.skipped_at_index)
            problem = f"no valid frames ({skipped} skipped)" if skipped else "no frames"
            raise DataError(self.labels_path, None, f"{problem} in the label JSON")
        last: dict[str, Frame] = {}
        for frame in loaded:
            if frame.name in seen:
                raise DataError(self.labels_path, frame.name, "frame listed twice")
            seen.add(frame.name)
            self._check_frame_order(frame, last)
            if self.tasks & TRACK_TASKS:
                self._check_track_ids(frame)
            self.frames.append(frame)
            self.records.append(
                FrameRecord(
                    name=frame.name,
                    image_path=self.images_dir / frame.name,
                    video=frame.videoName,
                    frame_index=frame.frameIndex,
                )
            )

    def _check_frame_order(self, frame: Frame, last: dict[str, Frame]) -> None:
        """Refuse a video frame whose frameIndex is not above that of the video's previous frame
        in the label file (`last`: video -> its last frame so far, updated here): frames listed
        out of order, or two frames at one index, make the video's order ambiguous."""
        video, index = frame.videoName, frame.frameIndex
        if video is None or index is None:
            return
        before = last.get(video)
        if before is not None and before.frameIndex is not None and index <= before.frameIndex:
            problem = (
                f"frameIndex {index} repeats that of frame {before.name!r} (video {video!r})"
                if index == before.frameIndex
                else f"frameIndex {index} comes after frameIndex {before.frameIndex} (frame "
                f"{before.name!r}) of video {video!r}; a video's frames must be listed in "
                "increasing frameIndex"
            )
            raise DataError(self.labels_path, frame.name, problem)
        last[video] = frame

    def _check_track_ids(self, frame: Frame) -> None:
        """Refuse a label id given to two objects of one frame: in a tracking set it is the
        track id, and one track cannot be two objects."""
        seen: set[str] = set()
        for label in frame.labels or []:
            if not is_object(label):
                continue
            if label.id in seen:
                raise DataError(
                    self.labels_path, frame.name, f"track id {label.id!r} repeats in this frame"
                )
            seen.add(label.id)

    def _index_images(self) -> None:
        """Records of every image under the image folder (a set without label JSON)."""
        if not self.images_dir.is_dir():
            raise DataError(self.images_dir, None, "image folder not found")
        for path in sorted(self.images_dir.rglob("*")):
            if path.suffix.lower() in IMAGE_SUFFIXES:
                rel = path.relative_to(self.images_dir)
                video = rel.parent.as_posix() if len(rel.parts) > 1 else None
                self.frames.append(None)
                self.records.append(FrameRecord(name=rel.as_posix(), image_path=path, video=video))
        if not self.records:
            raise DataError(self.images_dir, None, "no images found")

    # ------------------------------------------------------------------------- pseudo labels
    def _json_pseudo_tasks(self) -> dict[str, Path]:
        """Tasks whose pseudo labels are Scalabel JSON (file or per-video folder) -> source.

        Instance and mask-tracking sources are JSON only as `.json` files; as folders they hold
        bitmask PNGs (`dense_dirs`).
        """
        return {
            task: Path(source)
            for task, source in self.cfg.pseudo_labels.items()
            if task in JSON_TASKS
            or (task in ("instance", "mots") and Path(source).suffix == ".json")
        }

    def _load_pseudo_sources(self) -> dict[str, dict[str, Frame]]:
        """Task -> frame name -> frame of its JSON pseudo-label source (each file read once)."""
        loaded: dict[Path, dict[str, Frame]] = {}
        for source in set(self._json_pseudo_tasks().values()):
            by_name: dict[str, Frame] = {}
            for frame in self._load_json(source):
                if frame.name in by_name:
                    raise DataError(source, frame.name, "frame listed twice")
                by_name[frame.name] = frame
            loaded[source] = by_name
        return {task: loaded[source] for task, source in self._json_pseudo_tasks().items()}

    def _class_of(self, label: Label) -> int | None:
        return self.categories.resolve(label.category or "")[0]

    def _merge_pseudo(self, pseudo: dict[str, dict[str, Frame]]) -> None:
        """Merge each frame's pseudo labels into its ground truth, task by task (`pseudo_merge`).

        A frame that a task's source lacks is not labelled for that task (`_unlabelled`); frames
        of a source that the set does not hold are left out, with a warning.
        """
        for index, record in enumerate(self.records):
            found = {t: f[record.name] for t, f in pseudo.items() if record.name in f}
            self._unlabelled[index] = frozenset(pseudo) - set(found)
            if found:
                gt = self.frames[index] or Frame(
                    name=record.name, videoName=record.video, frameIndex=record.frame_index
                )
                self.frames[index] = merge_frame(gt, found, self.tasks, self._class_of)
        names = {record.name for record in self.records}
        for task, source in self._json_pseudo_tasks().items():
            extra = sorted(set(pseudo[task]) - names)
            if extra:
                LOG.warning(
                    "set %s: %d frame(s) of the %s pseudo labels %s are not in the set "
                    "(first: %s); left out",
                    self.set_name, len(extra), task, source, extra[0],
                )  # fmt: skip

    def _track_id_maps(self) -> dict[tuple[str | None, str], int]:
        """Label id -> integer track id, numbered per video in order of first appearance."""
        ids: dict[tuple[str | None, str], int] = {}
        counters: dict[str | None, int] = {}
        for frame in self.frames:
            for label in (frame.labels or []) if frame is not None else []:
                key = (frame.videoName, label.id)
                if key not in ids:
                    ids[key] = counters.get(frame.videoName, 0)
                    counters[frame.videoName] = ids[key] + 1
        return ids

    # ------------------------------------------------------------------------------- reading
    def _image_path(self, record: FrameRecord) -> Path:
        if record.image_path.is_file() or record.video is None:
            return record.image_path
        alt = self.images_dir / record.video / record.name
        return alt if alt.is_file() else record.image_path

    def _label_file(self, task: str, record: FrameRecord) -> Path:
        folder = self.dense_dirs[task]
        stem = Path(record.name).with_suffix(".png")
        direct = folder / stem
        if direct.is_file() or record.video is None:
            return direct
        alt = folder / record.video / stem.name
        return alt if alt.is_file() else direct

    def _is_last_of_video(self, index: int) -> bool:
        rec = self.records[index]
        if rec.video is None:
            return False
        return self._video_last.get(rec.video) == index

    @property
    def _video_last(self) -> dict[str, int]:
        if not hasattr(self, "_last_cache"):
            self._last_cache = {v: idx[-1] for v, idx in self.videos().items()}
        return self._last_cache

    def read(self, index: int) -> Sample:
        """Decode frame `index`: image, tags, instances, lanes and every dense map of the set."""
        record = self.records[index]
        record.image_path = self._image_path(record)
        image, orig = self.load_image(record)
        size = (int(image.shape[0]), int(image.shape[1]))
        frame = self.frames[index]
        tasks = set(self.tasks - self._unlabelled[index])
        sample = self.make_sample(record, image, orig, frozenset())
        where = self.labels_path
        labels = (frame.labels or []) if frame is not None else []
        if frame is not None and frame.size is not None:
            expected = (frame.size.height, frame.size.width)
            if expected != orig:
                raise DataError(where, record.name, f"JSON size {expected} != image size {orig}")
        if "tagging" in tasks:
            sample.tags = self._tags(frame, where, record.name)
        if tasks & INSTANCE_TASKS:
            sample.instances = self._instances(index, record, labels, size, orig, where)
        if "lanes" in tasks:
            lane_labels = [label for label in labels if is_lane(label)]
            sample.lane_lines = [
                line for label in lane_labels for line in _lane_line(label, where, record.name)
            ]
            self._scale_lines(sample.lane_lines, orig, size)
            if self.dense_dirs["lanes"].is_dir():
                png = self._read_mask("lanes", record, orig, np.uint8, 1)
                sample.lanes = torch.from_numpy(decode_lanes(self.resize_dense(png, size, True)))
        if "semantic" in tasks:
            sample.semantic = self._semantic(record, labels, orig, size, where)
        for task in sorted(tasks - OWN_TASKS):
            self._read_fields(sample, task, record, orig, size)
        if "flow" in tasks and self.dense_dirs["flow"].is_dir():
            # Without a flow folder the set trains flow unsupervised, from its frame pairs alone.
            flow_path = self._label_file("flow", record)
            if not flow_path.is_file() and self._is_last_of_video(index):
                tasks.discard("flow")  # forward flow does not exist for a video's last frame
            else:
                png = self._read_mask("flow", record, orig, np.uint16, 3)
                flow, valid = decode_flow(png)
                if size != orig:
                    flow, valid = self._resize_flow(flow, valid, orig, size)
                sample.flow = torch.from_numpy(flow)
                sample.flow_valid = torch.from_numpy(valid)
        sample.tasks = frozenset(tasks)
        return sample

    def _read_fields(
        self,
        sample: Sample,
        task: str,
        record: FrameRecord,
        orig: tuple[int, int],
        size: tuple[int, int],
    ) -> None:
        """Read `task`'s dense field from its PNG by the declared codec (resized nearest)."""
        dense = [f for f in task_fields(task) if f.is_dense]
        if len(dense) != 1 or dense[0].codec is None:
            raise DataError(
                self.labels_path.parent, record.name,
                f"task {task!r}: the BDD100K reader reads one dense field with a codec per task; "
                f"{task!r} declares {[f.name for f in dense]}",
            )  # fmt: skip
        spec = dense[0]
        codec = codec_of(spec)
        png = self._read_mask(task, record, orig, codec.dtype, codec.channels)
        value = codec.decode(self.resize_dense(png, size, True), spec)
        sample.set(spec.name, torch.from_numpy(np.ascontiguousarray(value)))

    @staticmethod
    def _resize_flow(
        flow: np.ndarray, valid: np.ndarray, orig: tuple[int, int], size: tuple[int, int]
    ) -> tuple[np.ndarray, np.ndarray]:
        sy, sx = size[0] / orig[0], size[1] / orig[1]
        out = np.stack(
            [cv2.resize(c, (size[1], size[0]), interpolation=cv2.INTER_NEAREST) for c in flow]
        )
        out[0] *= sx
        out[1] *= sy
        valid = (
            cv2.resize(valid.astype(np.uint8), (size[1], size[0]), interpolation=cv2.INTER_NEAREST)
            > 0
        )
        return out, valid

    @staticmethod
    def _scale_lines(lines: list[LaneLine], orig: tuple[int, int], size: tuple[int, int]) -> None:
        if orig == size:
            return
        scale = torch.tensor([size[1] / orig[1], size[0] / orig[0]])
        for line in lines:
            line.vertices = line.vertices * scale

    def _read_mask(
        self, task: str, record: FrameRecord, orig: tuple[int, int], dtype: type, channels: int
    ) -> np.ndarray:
        path = self._label_file(task, record)
        png = read_png(path, record.name, dtype=dtype, channels=channels, what=f"{task} PNG")
        check_size(png, orig, path, record.name, f"{task} PNG")
        return png

    def _tags(self, frame: Frame | None, where: Path, name: str) -> torch.Tensor:
        tags = torch.full((3,), IGNORE_INDEX, dtype=torch.int64)
        attrs = (frame.attributes or {}) if frame is not None else {}
        for i, (key, values) in enumerate(TAG_ATTRIBUTES.items()):
            if key in attrs:
                value = attrs[key]
                if value not in values:
                    raise DataError(where, name, f"unknown {key} {value!r}; known: {values}")
                tags[i] = values.index(value)  # type: ignore[arg-type]
        return tags

    def _semantic(
        self,
        record: FrameRecord,
        labels: list[Label],
        orig: tuple[int, int],
        size: tuple[int, int],
        where: Path,
    ) -> torch.Tensor:
        if self.dense_dirs["semantic"].is_dir():
            png = self._read_mask("semantic", record, orig, np.uint8, 1)
            semantic = decode_class_map(png, len(SEMANTIC_CLASSES))
        else:
            semantic = np.full(orig, IGNORE_INDEX, dtype=np.int64)
            for label in labels:
                name = label.category or ""
                if name in SEMANTIC_CLASSES:
                    value = SEMANTIC_CLASSES.index(name)
                elif name in SEMANTIC_IGNORED_NAMES:
                    value = IGNORE_INDEX
                else:
                    raise DataError(
                        where,
                        record.name,
                        f"label {label.id!r}: unknown semantic category {name!r}",
                    )
                semantic[self._label_mask(label, orig, where, record.name)] = value
        return torch.from_numpy(self.resize_dense(semantic, size, True))

    def _label_mask(
        self, label: Label, orig: tuple[int, int], where: Path, name: str
    ) -> np.ndarray:
        if label.rle is not None:
            if tuple(label.rle.size) != orig:
                raise DataError(
                    where,
                    name,
                    f"label {label.id!r}: RLE size {tuple(label.rle.size)}"
                    f" differs from the image size {orig}",
                )
            return rle_to_mask(label.rle)
        return _poly_mask(label, orig)

    def _instances(
        self,
        index: int,
        record: FrameRecord,
        labels: list[Label],
        size: tuple[int, int],
        orig: tuple[int, int],
        where: Path,
    ) -> Instances:
        want_masks = bool(self.tasks & {"instance", "mots"})
        mask_task = "mots" if "mots" in self.tasks else "instance"
        bitmask = None
        if want_masks and self.dense_dirs[mask_task].is_dir():
            png = self._read_mask(mask_task, record, orig, np.uint8, 4)
            bitmask = decode_instance_bitmask(png)
        frame = self.frames[index]
        chosen = [label for label in labels if is_object(label)]
        if not chosen and bitmask is not None:
            return self._bitmask_instances(bitmask, size, orig, record, where)
        boxes, classes, tracks, ignores, keypoints, masks = [], [], [], [], [], []
        dropped = 0
        bitmask_ids = {} if bitmask is None else {int(i): k for k, i in enumerate(bitmask.ids)}
        for label in chosen:
            name = label.category or ""
            cls, ignored = self.categories.resolve(name)
            if cls is None:
                if not self.categories.knows(name):
                    raise DataError(
                        where,
                        record.name,
                        f"label {label.id!r}: unknown category {name!r}; "
                        f"known: {', '.join(self.categories.classes)}",
                    )
                continue
            attrs = label.attributes or {}
            ignored = (
                ignored or bool(attrs.get("crowd", False)) or bool(attrs.get("ignored", False))
            )
            mask = None
            if want_masks:
                if bitmask is not None:
                    k = bitmask_ids.get(int(label.id)) if label.id.isdigit() else None
                    mask = bitmask.masks[k] if k is not None else np.zeros(orig, dtype=bool)
                elif label.rle is not None or label.poly2d:
                    mask = self._label_mask(label, orig, where, record.name)
                else:
                    mask = np.zeros(orig, dtype=bool)
            if label.box2d is not None:
                b = label.box2d
                box = _clip_box([b.x1, b.y1, b.x2, b.y2], orig)
                if box is None:
                    dropped += 1
                    continue
            elif mask is not None and mask.any():
                ys, xs = np.nonzero(mask)
                box = [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
            else:
                continue
            boxes.append(box)
            classes.append(cls)
            tracks.append(self._track_ids.get((frame.videoName if frame else None, label.id), -1))
            ignores.append(ignored)
            if "pose" in self.tasks:
                keypoints.append(self._keypoints(label, where, record.name))
            if mask is not None:
                masks.append(mask)
        if dropped:
            self.drop_boxes(record, dropped, where)
        n = len(boxes)
        instances = Instances(
            boxes=torch.tensor(boxes, dtype=torch.float32).reshape(n, 4),
            classes=torch.tensor(classes, dtype=torch.int64),
            track_ids=torch.tensor(tracks, dtype=torch.int64),
            ignore=torch.tensor(ignores, dtype=torch.bool),
            keypoints=torch.stack(keypoints)
            if keypoints
            else (torch.zeros((0, len(POSE_JOINTS), 3)) if "pose" in self.tasks else None),
            masks=self._mask_tensor(masks, orig, size) if want_masks else None,
        )
        return self._scale_instances(instances, orig, size)

    def _mask_tensor(
        self, masks: list[np.ndarray], orig: tuple[int, int], size: tuple[int, int]
    ) -> torch.Tensor:
        if not masks:
            return torch.zeros((0, *size), dtype=torch.bool)
        stacked = np.stack(masks).astype(np.uint8)
        if orig != size:
            stacked = np.stack([self.resize_dense(m, size, True) for m in stacked])
        return torch.from_numpy(stacked.astype(bool))

    @staticmethod
    def _scale_instances(
        inst: Instances, orig: tuple[int, int], size: tuple[int, int]
    ) -> Instances:
        if orig == size:
            return inst
        sy, sx = size[0] / orig[0], size[1] / orig[1]
        inst.boxes = inst.boxes * torch.tensor([sx, sy, sx, sy])
        if inst.keypoints is not None and len(inst):
            inst.keypoints[..., 0] *= sx
            inst.keypoints[..., 1] *= sy
        return inst

    def _bitmask_instances(
        self,
        bitmask: BitmaskInstances,
        size: tuple[int, int],
        orig: tuple[int, int],
        record: FrameRecord,
        where: Path,
    ) -> Instances:
        n_classes = len(self.categories.classes)
        bad = [int(c) for c in bitmask.categories if not 0 <= c < n_classes]
        if bad:
            raise DataError(
                where,
                record.name,
                f"bitmask category ids {sorted(set(bad))} outside 1..{n_classes}",
            )
        ignore = (bitmask.flags & (FLAG_CROWD | FLAG_IGNORED)) > 0
        inst = Instances(
            boxes=torch.from_numpy(bitmask.boxes),
            classes=torch.from_numpy(bitmask.categories),
            track_ids=torch.from_numpy(bitmask.ids),
            ignore=torch.from_numpy(ignore),
            masks=self._mask_tensor(list(bitmask.masks), orig, size),
        )
        return self._scale_instances(inst, orig, size)

    @staticmethod
    def _keypoints(label: Label, where: Path, name: str) -> torch.Tensor:
        out = torch.zeros((len(POSE_JOINTS), 3))
        for node in label.graph.nodes if label.graph is not None else []:
            if node.category not in POSE_JOINTS:
                raise DataError(where, name, f"label {label.id!r}: unknown joint {node.category!r}")
            j = POSE_JOINTS.index(node.category)
            out[j] = torch.tensor([*node.location, 2.0 if node.visibility != "N" else 1.0])
        return out
