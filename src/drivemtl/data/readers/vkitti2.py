"""Virtual KITTI 2 reader: rgb, classSegmentation (colour-coded) and depth (uint16 centimetres),
with normals computed from depth and the scene's intrinsics."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch

from drivemtl.data.config import ImageSetConfig
from drivemtl.data.errors import DataError
from drivemtl.data.geometry import Intrinsics, normals_from_depth
from drivemtl.data.io import check_size, read_png
from drivemtl.data.readers.base import READERS, FrameRecord, ImageSetReader
from drivemtl.structures.bdd import IGNORE_INDEX, SEMANTIC_CLASSES
from drivemtl.structures.sample import Sample

# VKITTI2 category -> one of the 19 semantic classes (None = ignore).
VKITTI2_TO_SEMANTIC: dict[str, str | None] = {
    "Terrain": "terrain", "Sky": "sky", "Tree": "vegetation", "Vegetation": "vegetation",
    "Building": "building", "Road": "road", "GuardRail": "fence", "TrafficSign": "traffic sign",
    "TrafficLight": "traffic light", "Pole": "pole", "Misc": None, "Truck": "truck", "Car": "car",
    "Van": "car", "Undefined": None,
}  # fmt: skip
DEFAULT_INTRINSICS = Intrinsics(725.0087, 725.0087, 620.5, 187.0)
FAR_CM = 65535  # sky / beyond range: invalid depth


def read_colors(path: Path) -> dict[tuple[int, int, int], int]:
    """`colors.txt` ("Category r g b" lines) -> RGB colour -> train id (255 for ignored)."""
    if not path.is_file():
        raise DataError(path, None, "VKITTI2 colors.txt not found")
    table: dict[tuple[int, int, int], int] = {}
    for line in path.read_text().splitlines()[1:]:
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 4 or parts[0] not in VKITTI2_TO_SEMANTIC:
            raise DataError(path, None, f"unexpected line {line!r}")
        target = VKITTI2_TO_SEMANTIC[parts[0]]
        rgb = (int(parts[1]), int(parts[2]), int(parts[3]))
        table[rgb] = IGNORE_INDEX if target is None else SEMANTIC_CLASSES.index(target)
    return table


@READERS.register("vkitti2")
class VKITTI2Reader(ImageSetReader):
    """`<root>/<Scene>/<variant>/frames/{rgb,classSegmentation,depth}/<camera>/...`; variant and
    camera are `paths.variant` (default clone) and `paths.camera` (default Camera_0)."""

    def __init__(
        self, set_name: str, cfg: ImageSetConfig, split: str, on_error: str = "raise"
    ) -> None:
        super().__init__(set_name, cfg, split, on_error)
        self.variant = cfg.paths.get("variant", "clone")
        self.camera = cfg.paths.get("camera", "Camera_0")
        files = sorted(self.root.glob(f"*/{self.variant}/frames/rgb/{self.camera}/rgb_*.jpg"))
        if not files:
            raise DataError(self.root, None, f"no */{self.variant}/frames/rgb/{self.camera} images")
        self._colors: dict[Path, dict[tuple[int, int, int], int]] = {}
        for path in files:
            scene_dir = path.parents[3]
            frame = int(re.sub(r"\D", "", path.stem))
            self.records.append(
                FrameRecord(
                    name=path.relative_to(self.root).as_posix(),
                    image_path=path,
                    video=scene_dir.relative_to(self.root).as_posix(),
                    frame_index=frame,
                )
            )
        self.check_clip_lengths(self.root)

    def _file(self, record: FrameRecord, kind: str, prefix: str, ext: str) -> Path:
        scene_dir = record.image_path.parents[3]
        index = f"{record.frame_index:05d}"
        return scene_dir / "frames" / kind / self.camera / f"{prefix}_{index}.{ext}"

    def intrinsics(self, record: FrameRecord) -> Intrinsics:
        """The frame's intrinsics from `<scene>/<variant>/intrinsic.txt` (KITTI defaults if absent)."""
        path = record.image_path.parents[3] / "intrinsic.txt"
        if not path.is_file():
            return DEFAULT_INTRINSICS
        cam = int(re.sub(r"\D", "", self.camera) or 0)
        for line in path.read_text().splitlines()[1:]:
            parts = line.split()
            if len(parts) == 6 and int(parts[0]) == record.frame_index and int(parts[1]) == cam:
                return Intrinsics(*(float(p) for p in parts[2:]))
        raise DataError(path, record.name, f"no intrinsics for frame {record.frame_index}")

    def read(self, index: int) -> Sample:
        """Image, semantic map (colours -> train ids), depth and normals of frame `index`."""
        record = self.records[index]
        image, orig = self.load_image(record)
        size = (int(image.shape[0]), int(image.shape[1]))
        sample = self.make_sample(record, image, orig, self.tasks)
        if "semantic" in self.tasks:
            colors_path = record.image_path.parents[3] / "colors.txt"
            if colors_path not in self._colors:
                self._colors[colors_path] = read_colors(colors_path)
            table = self._colors[colors_path]
            path = self._file(record, "classSegmentation", "classgt", "png")
            rgb = read_png(path, record.name, dtype=np.uint8, channels=3, what="classgt PNG")
            check_size(rgb, orig, path, record.name, "classgt PNG")
            code = (rgb[..., 0].astype(np.int64) << 16) | (rgb[..., 1].astype(np.int64) << 8)
            code |= rgb[..., 2]
            semantic = np.full(orig, IGNORE_INDEX, dtype=np.int64)
            for (r, g, b), train in table.items():
                semantic[code == (r << 16 | g << 8 | b)] = train
            sample.semantic = torch.from_numpy(self.resize_dense(semantic, size, True))
        if self.tasks & {"depth", "normals"}:
            path = self._file(record, "depth", "depth", "png")
            png = read_png(path, record.name, dtype=np.uint16, channels=1, what="depth PNG")
            check_size(png, orig, path, record.name, "depth PNG")
            depth = np.where(png == FAR_CM, 0, png).astype(np.float32) / 100.0
            depth = self.resize_dense(depth, size, True)
            if "depth" in self.tasks:
                sample.depth = torch.from_numpy(depth)
            if "normals" in self.tasks:
                k = self.intrinsics(record).scaled(size[0] / orig[0], size[1] / orig[1])
                sample.normals = torch.from_numpy(normals_from_depth(depth, k))
        return sample
