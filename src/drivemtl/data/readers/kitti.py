"""KITTI object detection (`label_2`), tracking (`label_02`) and semantic segmentation readers.

KITTI types map onto the BDD100K thing classes: Car / Van -> car, Truck -> truck, Pedestrian /
Person_sitting -> pedestrian, Cyclist -> rider, Tram -> train; Misc is skipped; DontCare regions
become ignore instances (class car). Semantic labels are Cityscapes label ids, mapped to the 19
train ids with the Cityscapes table.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from drivemtl.data.config import ImageSetConfig
from drivemtl.data.errors import DataError
from drivemtl.data.io import check_size, read_png
from drivemtl.data.readers.base import READERS, FrameRecord, ImageSetReader
from drivemtl.data.readers.cityscapes import LABEL_TO_TRAIN
from drivemtl.log import get_logger
from drivemtl.structures.bdd import IGNORE_INDEX, THING_CLASSES
from drivemtl.structures.instances import Instances
from drivemtl.structures.sample import Sample

LOG = get_logger(__name__)

KITTI_TO_THING: dict[str, str | None] = {
    "Car": "car", "Van": "car", "Truck": "truck", "Pedestrian": "pedestrian",
    "Person_sitting": "pedestrian", "Cyclist": "rider", "Tram": "train", "Misc": None,
    "DontCare": "car",
}  # fmt: skip


@dataclass
class KittiObject:
    """One label line: class index, 2D box, track id (-1 none) and whether it is a DontCare area."""

    cls: int
    box: tuple[float, float, float, float]
    track_id: int
    ignore: bool


def parse_object(
    fields: list[str], path: Path, line_no: int, frame: str | None
) -> KittiObject | None:
    """Parse `type truncated occluded alpha x1 y1 x2 y2 ...` (15 or 16 fields) into an object."""
    if len(fields) not in (15, 16):
        raise DataError(path, frame, f"line {line_no}: expected 15 or 16 fields, got {len(fields)}")
    kind = fields[0]
    if kind not in KITTI_TO_THING:
        raise DataError(path, frame, f"line {line_no}: unknown KITTI type {kind!r}")
    target = KITTI_TO_THING[kind]
    if target is None:
        return None
    try:
        x1, y1, x2, y2 = (float(v) for v in fields[4:8])
    except ValueError:
        raise DataError(path, frame, f"line {line_no}: box values are not numbers") from None
    if x2 < x1 or y2 < y1:
        raise DataError(path, frame, f"line {line_no}: box has x2 < x1 or y2 < y1")
    return KittiObject(THING_CLASSES.index(target), (x1, y1, x2, y2), -1, kind == "DontCare")


def _instances(objects: list[KittiObject]) -> Instances:
    n = len(objects)
    return Instances(
        boxes=torch.tensor([o.box for o in objects], dtype=torch.float32).reshape(n, 4),
        classes=torch.tensor([o.cls for o in objects], dtype=torch.int64),
        track_ids=torch.tensor([o.track_id for o in objects], dtype=torch.int64),
        ignore=torch.tensor([o.ignore for o in objects], dtype=torch.bool),
    )


class _KittiBase(ImageSetReader):
    def _scaled(self, inst: Instances, orig: tuple[int, int], size: tuple[int, int]) -> Instances:
        if orig != size:
            sy, sx = size[0] / orig[0], size[1] / orig[1]
            inst.boxes = inst.boxes * torch.tensor([sx, sy, sx, sy])
        return inst


@READERS.register("kitti_detection")
class KittiDetectionReader(_KittiBase):
    """`<root>/image_2/<id>.png` with `<root>/label_2/<id>.txt` (task: detection)."""

    def __init__(
        self, set_name: str, cfg: ImageSetConfig, split: str, on_error: str = "raise"
    ) -> None:
        super().__init__(set_name, cfg, split, on_error)
        self.images_dir = self.path("images", "image_2")
        self.labels_dir = self.path("labels", "label_2")
        files = sorted(self.images_dir.glob("*.png"))
        if not files:
            raise DataError(self.images_dir, None, "no KITTI *.png images found")
        self.records = [FrameRecord(name=p.name, image_path=p) for p in files]

    def objects(self, record: FrameRecord) -> list[KittiObject]:
        """Parsed label file of a frame (Misc lines left out)."""
        path = self.labels_dir / Path(record.name).with_suffix(".txt")
        if not path.is_file():
            raise DataError(path, record.name, "label file not found")
        out = []
        for no, line in enumerate(path.read_text().splitlines(), start=1):
            if line.strip():
                obj = parse_object(line.split(), path, no, record.name)
                if obj is not None:
                    out.append(obj)
        return out

    def read(self, index: int) -> Sample:
        """Image and boxes of frame `index`."""
        record = self.records[index]
        image, orig = self.load_image(record)
        sample = self.make_sample(record, image, orig, self.tasks)
        size = (int(image.shape[0]), int(image.shape[1]))
        sample.instances = self._scaled(_instances(self.objects(record)), orig, size)
        return sample


@READERS.register("kitti_tracking")
class KittiTrackingReader(_KittiBase):
    """`<root>/image_02/<seq>/<frame>.png` with `<root>/label_02/<seq>.txt` (tasks: mot, detection)."""

    def __init__(
        self, set_name: str, cfg: ImageSetConfig, split: str, on_error: str = "raise"
    ) -> None:
        super().__init__(set_name, cfg, split, on_error)
        self.images_dir = self.path("images", "image_02")
        self.labels_dir = self.path("labels", "label_02")
        self.objects: dict[tuple[str, int], list[KittiObject]] = {}
        sequences = sorted(p for p in self.images_dir.iterdir() if p.is_dir()) if (
            self.images_dir.is_dir()
        ) else []  # fmt: skip
        for seq_dir in sequences:
            seq = seq_dir.name
            self._parse_labels(seq)
            for path in sorted(seq_dir.glob("*.png")):
                self.records.append(
                    FrameRecord(name=f"{seq}/{path.name}", image_path=path, video=seq,
                                frame_index=int(path.stem))
                )  # fmt: skip
        if not self.records:
            raise DataError(self.images_dir, None, "no KITTI tracking sequences found")
        self.check_clip_lengths(self.labels_dir)

    def _parse_labels(self, seq: str) -> None:
        """The sequence's label lines, in frame order; a frame number below the previous line's
        or a track id (>= 0; DontCare areas have -1) twice in one frame is a DataError."""
        path = self.labels_dir / f"{seq}.txt"
        if not path.is_file():
            raise DataError(path, None, "label file not found")
        last, tracks = -1, set()
        for no, line in enumerate(path.read_text().splitlines(), start=1):
            fields = line.split()
            if not fields:
                continue
            try:
                frame, track = int(fields[0]), int(fields[1])
            except (ValueError, IndexError):
                raise DataError(path, None, f"line {no}: frame / track id not integers") from None
            name = f"{seq}/{frame:06d}.png"
            if frame < last:
                raise DataError(path, name, f"line {no}: frame {frame} comes after frame {last} "
                                "(label lines must be in frame order)")  # fmt: skip
            if frame != last:
                last, tracks = frame, set()
            if track >= 0 and track in tracks:
                raise DataError(path, name, f"line {no}: track id {track} repeats in this frame")
            tracks.add(track)
            obj = parse_object(fields[2:], path, no, name)
            if obj is not None:
                obj.track_id = track
                self.objects.setdefault((seq, frame), []).append(obj)

    def read(self, index: int) -> Sample:
        """Image and tracked boxes of frame `index`."""
        record = self.records[index]
        image, orig = self.load_image(record)
        sample = self.make_sample(record, image, orig, self.tasks)
        size = (int(image.shape[0]), int(image.shape[1]))
        objects = self.objects.get((record.video or "", record.frame_index or 0), [])
        sample.instances = self._scaled(_instances(objects), orig, size)
        return sample


# Cityscapes label id (as stored in uint8, so -1 "license plate" reads as 255) -> train id.
_LABEL_LUT = np.full(256, IGNORE_INDEX, dtype=np.int64)
_LABEL_LUT[list(LABEL_TO_TRAIN)] = list(LABEL_TO_TRAIN.values())
SEMANTICS_TASKS = frozenset({"semantic"})


@READERS.register("kitti_semantics")
class KittiSemanticsReader(ImageSetReader):
    """`<root>/image_2/<stem>.png` with `<root>/semantic/<stem>.png` holding Cityscapes label ids
    (KITTI semantic segmentation benchmark; task: semantic, or none for images only)."""

    def __init__(
        self, set_name: str, cfg: ImageSetConfig, split: str, on_error: str = "raise"
    ) -> None:
        super().__init__(set_name, cfg, split, on_error)
        self.images_dir = self.path("images", "image_2")
        self.semantic_dir = self.path("semantic", "semantic")
        unsupported = sorted(self.tasks - SEMANTICS_TASKS)
        if unsupported:
            raise DataError(self.root, None, f"kitti_semantics reads only the 'semantic' task "
                                             f"(or none), not {unsupported}")  # fmt: skip
        files = sorted(self.images_dir.glob("*.png"))
        if not files:
            raise DataError(self.images_dir, None, "no KITTI *.png images found")
        for path in files:
            record = FrameRecord(name=path.stem, image_path=path)
            if "semantic" in self.tasks and not self.label_path(record).is_file():
                error = self.error(record, self.label_path(record), "semantic PNG not found "
                                   f"(every image in {self.images_dir} needs one)")  # fmt: skip
                if self.on_error != "skip":
                    raise error
                self.skipped_at_index.append(str(error))
                LOG.warning("skipping frame: %s", error)
                continue
            self.records.append(record)
        if not self.records:
            raise DataError(self.semantic_dir, None, "no frame has a semantic PNG")

    def label_path(self, record: FrameRecord) -> Path:
        """The frame's label-id PNG, `<semantic dir>/<stem>.png`."""
        return self.semantic_dir / f"{record.name}.png"

    def read(self, index: int) -> Sample:
        """Image and train-id semantic map (label ids mapped, unlisted ids -> ignore) of `index`."""
        record = self.records[index]
        image, orig = self.load_image(record)
        sample = self.make_sample(record, image, orig, self.tasks)
        if "semantic" in self.tasks:
            path = self.label_path(record)
            png = read_png(path, record.name, dtype=np.uint8, channels=1, what="semantic PNG")
            check_size(png, orig, path, record.name, "semantic PNG")
            size = (int(image.shape[0]), int(image.shape[1]))
            sample.semantic = torch.from_numpy(_LABEL_LUT[self.resize_dense(png, size, True)])
        return sample
