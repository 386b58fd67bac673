"""KITTI object detection (`label_2`) and tracking (`label_02`) readers.

KITTI types map onto the BDD100K thing classes: Car / Van -> car, Truck -> truck, Pedestrian /
Person_sitting -> pedestrian, Cyclist -> rider, Tram -> train; Misc is skipped; DontCare regions
become ignore instances (class car).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from drivemtl.data.config import ImageSetConfig
from drivemtl.data.errors import DataError
from drivemtl.data.readers.base import READERS, FrameRecord, ImageSetReader
from drivemtl.structures.bdd import THING_CLASSES
from drivemtl.structures.instances import Instances
from drivemtl.structures.sample import Sample

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

    def _parse_labels(self, seq: str) -> None:
        path = self.labels_dir / f"{seq}.txt"
        if not path.is_file():
            raise DataError(path, None, "label file not found")
        for no, line in enumerate(path.read_text().splitlines(), start=1):
            fields = line.split()
            if not fields:
                continue
            try:
                frame, track = int(fields[0]), int(fields[1])
            except (ValueError, IndexError):
                raise DataError(path, None, f"line {no}: frame / track id not integers") from None
            obj = parse_object(fields[2:], path, no, f"{seq}/{frame:06d}.png")
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
