"""Cityscapes reader: leftImg8bit images, gtFine labelIds -> 19 train ids, instanceIds, and
depth from disparity + camera JSON, with normals computed from that depth."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from drivemtl.data.config import ImageSetConfig
from drivemtl.data.errors import DataError
from drivemtl.data.geometry import Intrinsics, normals_from_depth
from drivemtl.data.io import check_size, read_png
from drivemtl.data.readers.base import READERS, FrameRecord, ImageSetReader
from drivemtl.structures.bdd import IGNORE_INDEX
from drivemtl.structures.instances import Instances
from drivemtl.structures.sample import Sample

# Cityscapes label id -> train id (the 19 evaluated classes, same order as SEMANTIC_CLASSES).
LABEL_TO_TRAIN: dict[int, int] = {
    7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11, 25: 12,
    26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18,
}  # fmt: skip
# Cityscapes thing label id -> index into THING_CLASSES (person is BDD's pedestrian).
LABEL_TO_THING: dict[int, int] = {24: 0, 25: 1, 26: 2, 27: 3, 28: 4, 31: 5, 32: 6, 33: 7}

_LUT = np.full(256, IGNORE_INDEX, dtype=np.int64)
for _label, _train in LABEL_TO_TRAIN.items():
    _LUT[_label] = _train

SUFFIX = "_leftImg8bit.png"


def disparity_to_depth(png: np.ndarray, baseline: float, fx: float) -> np.ndarray:
    """Cityscapes disparity PNG (d = (p - 1) / 256 for p > 0) -> depth metres, 0 = invalid."""
    disparity = (png.astype(np.float64) - 1.0) / 256.0
    valid = (png > 0) & (disparity > 0)
    depth = np.zeros(png.shape, dtype=np.float64)
    depth[valid] = baseline * fx / disparity[valid]
    return depth.astype(np.float32)


@READERS.register("cityscapes")
class CityscapesReader(ImageSetReader):
    """`<root>/leftImg8bit/<split>/<city>/<stem>_leftImg8bit.png` and the matching gtFine,
    disparity and camera files. Tasks: semantic, instance, detection, depth, normals."""

    def __init__(
        self, set_name: str, cfg: ImageSetConfig, split: str, on_error: str = "raise"
    ) -> None:
        super().__init__(set_name, cfg, split, on_error)
        self.images_dir = self.path("images", "leftImg8bit/{split}")
        self.gt_dir = self.path("gtFine", "gtFine/{split}")
        self.disparity_dir = self.path("disparity", "disparity/{split}")
        self.camera_dir = self.path("camera", "camera/{split}")
        files = sorted(self.images_dir.glob(f"*/*{SUFFIX}"))
        if not files:
            raise DataError(self.images_dir, None, f"no */*{SUFFIX} images found")
        for path in files:
            rel = path.relative_to(self.images_dir).as_posix()
            self.records.append(FrameRecord(name=rel, image_path=path))

    def _companion(self, folder: Path, record: FrameRecord, suffix: str) -> Path:
        return folder / record.name.replace(SUFFIX, suffix)

    def intrinsics(self, record: FrameRecord) -> tuple[Intrinsics, float]:
        """Camera intrinsics and stereo baseline from the frame's camera JSON."""
        path = self._companion(self.camera_dir, record, "_camera.json")
        if not path.is_file():
            raise DataError(path, record.name, "camera JSON not found")
        try:
            data = json.loads(path.read_text())
            intr = data["intrinsic"]
            k = Intrinsics(intr["fx"], intr["fy"], intr["u0"], intr["v0"])
            return k, float(data["extrinsic"]["baseline"])
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise DataError(path, record.name, f"malformed camera JSON ({exc!r})") from None

    def read(self, index: int) -> Sample:
        """Image, train-id semantic map, instances, depth and normals of frame `index`."""
        record = self.records[index]
        image, orig = self.load_image(record)
        size = (int(image.shape[0]), int(image.shape[1]))
        sample = self.make_sample(record, image, orig, self.tasks)
        if "semantic" in self.tasks:
            path = self._companion(self.gt_dir, record, "_gtFine_labelIds.png")
            png = read_png(path, record.name, dtype=np.uint8, channels=1, what="labelIds PNG")
            check_size(png, orig, path, record.name, "labelIds PNG")
            sample.semantic = torch.from_numpy(_LUT[self.resize_dense(png, size, True)])
        if self.tasks & {"instance", "detection"}:
            sample.instances = self._instances(record, orig, size)
        if self.tasks & {"depth", "normals"}:
            path = self._companion(self.disparity_dir, record, "_disparity.png")
            png = read_png(path, record.name, dtype=np.uint16, channels=1, what="disparity PNG")
            check_size(png, orig, path, record.name, "disparity PNG")
            k, baseline = self.intrinsics(record)
            depth = self.resize_dense(disparity_to_depth(png, baseline, k.fx), size, True)
            if "depth" in self.tasks:
                sample.depth = torch.from_numpy(depth)
            if "normals" in self.tasks:
                k = k.scaled(size[0] / orig[0], size[1] / orig[1])
                sample.normals = torch.from_numpy(normals_from_depth(depth, k))
        return sample

    def _instances(
        self, record: FrameRecord, orig: tuple[int, int], size: tuple[int, int]
    ) -> Instances:
        path = self._companion(self.gt_dir, record, "_gtFine_instanceIds.png")
        png = read_png(path, record.name, channels=1, what="instanceIds PNG")
        check_size(png, orig, path, record.name, "instanceIds PNG")
        ids_map = self.resize_dense(png.astype(np.int32), size, True)
        ids = [int(i) for i in np.unique(ids_map) if i >= 1000 and i // 1000 in LABEL_TO_THING]
        masks = np.stack([ids_map == i for i in ids]) if ids else np.zeros((0, *size), bool)
        boxes = np.zeros((len(ids), 4), dtype=np.float32)
        for k, mask in enumerate(masks):
            ys, xs = np.nonzero(mask)
            boxes[k] = (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
        return Instances(
            boxes=torch.from_numpy(boxes),
            classes=torch.tensor([LABEL_TO_THING[i // 1000] for i in ids], dtype=torch.int64),
            track_ids=torch.tensor(ids, dtype=torch.int64),
            masks=torch.from_numpy(masks),
            ignore=torch.zeros(len(ids), dtype=torch.bool),
        )
