"""What every reader provides: a list of frame records and `read(i) -> Sample` (raw, untransformed)."""

from __future__ import annotations

import multiprocessing
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from drivemtl.data.config import ImageSetConfig
from drivemtl.data.errors import DataError
from drivemtl.data.io import read_rgb
from drivemtl.log import get_logger
from drivemtl.registry import Registry
from drivemtl.structures.sample import Sample, SampleMeta

LOG = get_logger(__name__)


@dataclass
class FrameRecord:
    """One frame of an image set: its name, video and index in the video, and its image path."""

    name: str
    image_path: Path
    video: str | None = None
    frame_index: int | None = None


class ImageSetReader(ABC):
    """Reads one image set. Construction indexes the frames (label files are parsed here, so
    malformed JSON fails at start-up); `read(i)` decodes the image and the dense label files."""

    def __init__(
        self, set_name: str, cfg: ImageSetConfig, split: str, on_error: str = "raise"
    ) -> None:
        self.set_name = set_name
        self.on_error = on_error
        self.skipped_at_index: list[str] = []  # frames dropped while indexing (on_error=skip)
        # boxes outside the image / empty after clipping, counted across DataLoader workers
        self._dropped_boxes = multiprocessing.get_context().Value("i", 0)
        self.cfg = cfg
        self.split = split
        self.tasks = frozenset(cfg.tasks)
        self.root = Path(str(cfg.root).replace("{split}", split))
        # whether a path the reader uses depends on the split (`{split}` in the root or a path)
        self.reads_split = "{split}" in str(cfg.root)
        self.records: list[FrameRecord] = []

    def path(self, key: str, default: str) -> Path:
        """`paths[key]` (or `default`) with `{split}` filled in, relative to the root."""
        template = self.cfg.paths.get(key, default)
        self.reads_split = self.reads_split or "{split}" in template
        return self.root / template.replace("{split}", self.split)

    def __len__(self) -> int:
        return len(self.records)

    @abstractmethod
    def read(self, index: int) -> Sample:
        """Decode frame `index` into a Sample; bad input raises DataError (file, frame, problem)."""

    def videos(self) -> dict[str, list[int]]:
        """Video name -> record indices sorted by frame index (empty for still-image sets)."""
        out: dict[str, list[tuple[int, int]]] = {}
        for i, rec in enumerate(self.records):
            if rec.video is not None:
                out.setdefault(rec.video, []).append((rec.frame_index or 0, i))
        return {v: [i for _, i in sorted(items)] for v, items in out.items()}

    def check_clip_lengths(self, where: Path | None) -> None:
        """Refuse a video with fewer frames than the set's clip (`clip.length`), naming `where`
        and the video's first frame.

        No key of it has `length - 1` distinct other frames, so every clip's references would
        silently repeat frames (`window` draws one frame twice, `next` mirrors back onto the key
        itself). A one-frame video is a still image (its references follow `clip.still`), so
        only videos of 2 .. length - 1 frames are refused, whatever `still` says.
        """
        clip = self.cfg.clip
        if clip is None:
            return
        for video, indices in self.videos().items():
            if 1 < len(indices) < clip.length:
                raise DataError(
                    where,
                    self.records[indices[0]].name,
                    f"video {video!r} has {len(indices)} frames, fewer than the set's clip "
                    f"length {clip.length} (key + references); shorten the clip or leave the "
                    "video out",
                )

    def load_image(self, record: FrameRecord) -> tuple[np.ndarray, tuple[int, int]]:
        """RGB uint8 image (resized to `load_size` when set) and its original (H, W)."""
        image = read_rgb(record.image_path, record.name)
        orig = (int(image.shape[0]), int(image.shape[1]))
        if self.cfg.load_size is not None and tuple(self.cfg.load_size) != orig:
            h, w = self.cfg.load_size
            image = cv2.resize(image, (w, h), interpolation=cv2.INTER_LINEAR)
        return image, orig

    def make_sample(
        self, record: FrameRecord, image: np.ndarray, orig: tuple[int, int], tasks: frozenset[str]
    ) -> Sample:
        """A Sample holding the image as [3, H, W] float32 0..255 and the frame's metadata."""
        tensor = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).float()
        meta = SampleMeta(
            name=record.name,
            image_set=self.set_name,
            orig_size=orig,
            image_size=(int(image.shape[0]), int(image.shape[1])),
            video=record.video,
            frame_index=record.frame_index,
            image_path=record.image_path,
        )
        return Sample(image=tensor, meta=meta, tasks=tasks)

    def resize_dense(self, array: np.ndarray, size: tuple[int, int], nearest: bool) -> np.ndarray:
        """Resize a label map [H, W] or [H, W, C] to `size` (nearest for ids and depth)."""
        if tuple(array.shape[:2]) == tuple(size):
            return array
        interp = cv2.INTER_NEAREST if nearest else cv2.INTER_LINEAR
        return cv2.resize(array, (size[1], size[0]), interpolation=interp)

    @property
    def dropped_boxes(self) -> int:
        """Boxes left out so far (all workers) because they lie outside the image or are empty."""
        return int(self._dropped_boxes.value)

    def drop_boxes(self, record: FrameRecord, count: int, path: Path | None) -> None:
        """Count `count` degenerate boxes of `record` as dropped; the set's first is logged once.

        The set's total is logged by `MultiSetDataset.report_skipped` after each loader pass.
        """
        with self._dropped_boxes.get_lock():
            first = self._dropped_boxes.value == 0
            self._dropped_boxes.value += count
        if first:
            LOG.warning(
                "set %s: %s: frame %r: dropped %d box(es) outside the image or empty after "
                "clipping (further ones in this set are counted, not logged one by one)",
                self.set_name, path, record.name, count,
            )  # fmt: skip

    def error(self, record: FrameRecord | None, path: Path | None, problem: str) -> DataError:
        """A DataError for this set naming the file and the frame."""
        return DataError(path, None if record is None else record.name, problem)


READERS: Registry[type[ImageSetReader]] = Registry("reader")
