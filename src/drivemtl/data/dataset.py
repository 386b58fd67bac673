"""Datasets over image sets: one reader per set, transforms, reference frames, error policy."""

from __future__ import annotations

import bisect
import copy
import dataclasses
import functools
import multiprocessing
import random
from collections.abc import Callable
from pathlib import Path

import torch
from torch.utils.data import Dataset

from drivemtl.data.config import REMAPPABLE, DataConfig, ImageSetConfig, SubsetConfig
from drivemtl.data.errors import DataError
from drivemtl.data.readers import READERS, ImageSetReader
from drivemtl.log import get_logger
from drivemtl.structures.sample import Sample

LOG = get_logger(__name__)
Transform = Callable[[Sample], Sample]


def _subset_indices(reader: ImageSetReader, subset: SubsetConfig | None) -> list[int]:
    indices = list(range(len(reader)))
    if subset is None:
        return indices
    if subset.names_file is not None:
        path = Path(subset.names_file)
        if not path.is_file():
            raise DataError(path, None, "subset names file not found")
        wanted = [line.strip() for line in path.read_text().splitlines() if line.strip()]
        by_name = {rec.name: i for i, rec in enumerate(reader.records)}
        missing = [n for n in wanted if n not in by_name]
        if missing:
            raise DataError(path, missing[0], f"{len(missing)} listed frame(s) not in the set")
        indices = [by_name[n] for n in wanted]
    end = None if subset.frames is None else subset.offset + subset.frames
    return indices[subset.offset : end]


def _mirror(position: int, length: int) -> int:
    """`position` reflected into 0..length-1 (past the last frame, walk back from it)."""
    period = 2 * (length - 1)
    position %= period
    return position if position < length else period - position


def _copy_frame(sample: Sample) -> Sample:
    """A reference frame that is a copy of the key frame (image and labels, no references)."""
    return copy.deepcopy(dataclasses.replace(sample, references=[]))


class ImageSetDataset(Dataset[Sample]):
    """One image set: `__getitem__(i)` reads frame i (plus its clip's reference frames) and
    transforms them together.

    With `on_error="skip"` a frame that fails to decode is logged and replaced by the next good
    frame of the set (training keeps full batches), or with `drop_skipped` read as None (evaluation
    scores every good frame once and no bad one); `skipped` counts such frames across workers.
    """

    def __init__(
        self,
        reader: ImageSetReader,
        cfg: ImageSetConfig,
        transform: Transform | None = None,
        on_error: str = "raise",
        indices: list[int] | None = None,
        drop_skipped: bool = False,
    ) -> None:
        self.reader = reader
        self.name = reader.set_name
        self.cfg = cfg
        self.transform = transform
        self.on_error = on_error
        self.drop_skipped = drop_skipped
        self.indices = list(range(len(reader))) if indices is None else indices
        self.tasks = reader.tasks
        self._skipped = multiprocessing.get_context().Value("i", len(reader.skipped_at_index))
        self._video_pos: dict[int, tuple[list[int], int]] = {}
        for frames in reader.videos().values():
            for pos, idx in enumerate(frames):
                self._video_pos[idx] = (frames, pos)

    def __len__(self) -> int:
        return len(self.indices)

    @property
    def skipped(self) -> int:
        """How many frames were skipped because of bad input (all workers together)."""
        return int(self._skipped.value)

    def video_of(self, i: int) -> str | None:
        """Video name of item i (None for still images)."""
        return self.reader.records[self.indices[i]].video

    def reference_indices(self, record_index: int, rng: random.Random | None = None) -> list[int]:
        """Record indices of the reference frames of `record_index` under the set's clip rule.

        A still frame (no video, or a one-frame video) gets its own index repeated with
        `still: copy`, nothing with `still: none`; no clip config: no references.
        """
        clip = self.cfg.clip
        if clip is None:
            return []
        count = clip.length - 1
        frames, pos = self._video_pos.get(record_index, ([record_index], 0))
        if len(frames) == 1:
            return [record_index] * count if clip.still == "copy" else []
        if clip.sampling == "next":
            return [frames[_mirror(pos + k, len(frames))] for k in range(1, count + 1)]
        nearby = [p for p in range(max(0, pos - clip.window), min(len(frames), pos + clip.window + 1))
                  if p != pos]  # fmt: skip
        rng = rng or random
        picks = rng.sample(nearby, count) if count <= len(nearby) else rng.choices(nearby, k=count)
        return [frames[p] for p in picks]

    def _read(self, record_index: int) -> Sample:
        sample = self._remapped(self.reader.read(record_index))
        for ref in self.reference_indices(record_index):
            same = ref == record_index
            frame = _copy_frame(sample) if same else self._remapped(self.reader.read(ref))
            sample.references.append(frame)
        return sample

    def _remapped(self, sample: Sample) -> Sample:
        """The sample with its class-map fields mapped by the set's `remap` (see ClassRemap)."""
        for name, tables in self._remap_tables.items():
            value = getattr(sample, name)
            if value is not None:
                setattr(sample, name, tables[value.long()].to(value.dtype))
        return sample

    @functools.cached_property
    def _remap_tables(self) -> dict[str, torch.Tensor]:
        return {
            name: torch.tensor(spec.table(REMAPPABLE[name]), dtype=torch.int64)
            for name, spec in self.cfg.remap.items()
        }

    def _skip(self, exc: DataError) -> None:
        """Count and log a frame left out for bad input (on_error=skip)."""
        with self._skipped.get_lock():
            self._skipped.value += 1
        LOG.warning("skipping frame (set %s): %s", self.name, exc)

    def _read_or_replace(self, i: int) -> Sample:
        """Item i, or the next good frame of the set in its place when it fails to load."""
        for attempt in range(len(self.indices)):
            try:
                return self._read(self.indices[(i + attempt) % len(self.indices)])
            except DataError as exc:
                self._skip(exc)
        raise DataError(None, None, f"image set {self.name!r}: every frame failed to load")

    def __getitem__(self, i: int) -> Sample | None:  # type: ignore[override]
        if self.on_error != "skip":
            sample = self._read(self.indices[i])
        elif self.drop_skipped:
            try:
                sample = self._read(self.indices[i])
            except DataError as exc:
                self._skip(exc)
                return None
        else:
            sample = self._read_or_replace(i)
        return self.transform(sample) if self.transform is not None else sample


class MultiSetDataset(Dataset[Sample]):
    """Several image sets behind one index space: items of set k follow those of set k-1."""

    def __init__(self, datasets: list[ImageSetDataset]) -> None:
        if not datasets:
            raise ValueError("MultiSetDataset needs at least one image set")
        names = [d.name for d in datasets]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate image set names: {names}")
        self.datasets = datasets
        self.offsets = [0]
        for d in datasets:
            self.offsets.append(self.offsets[-1] + len(d))

    @property
    def sets(self) -> list[str]:
        """Names of the image sets, in index order."""
        return [d.name for d in self.datasets]

    def __len__(self) -> int:
        return self.offsets[-1]

    def _locate(self, i: int) -> tuple[int, int]:
        if not 0 <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} samples")
        k = bisect.bisect_right(self.offsets, i) - 1
        return k, i - self.offsets[k]

    def set_of(self, i: int) -> str:
        """Name of the image set that item i belongs to."""
        return self.datasets[self._locate(i)[0]].name

    def set_range(self, name: str) -> range:
        """Global indices of the items of set `name`."""
        k = self.sets.index(name)
        return range(self.offsets[k], self.offsets[k + 1])

    def set_tasks(self, name: str) -> frozenset[str]:
        """Tasks that set `name` is labelled for."""
        return self.datasets[self.sets.index(name)].tasks

    def __getitem__(self, i: int) -> Sample | None:  # type: ignore[override]
        k, j = self._locate(i)
        return self.datasets[k][j]

    @property
    def skipped(self) -> int:
        """Frames skipped because of bad input, over all sets and workers."""
        return sum(d.skipped for d in self.datasets)

    def split_agnostic_sets(self) -> list[str]:
        """Sets that give the same frames for every split: no `splits` listed and no `{split}` in
        any path their reader uses (evaluating them on `val` reads the training frames too)."""
        return [d.name for d in self.datasets if d.cfg.splits is None and not d.reader.reads_split]

    def set_skipped(self, name: str) -> int:
        """Frames of set `name` skipped because of bad input (indexing and reading, all workers)."""
        return self.datasets[self.sets.index(name)].skipped

    def report_skipped(self) -> int:
        """Log how many frames were skipped (on_error=skip) and boxes dropped per set; return the
        frame count."""
        for d in self.datasets:
            if d.reader.dropped_boxes:
                LOG.warning(
                    "set %s: dropped %d box(es) outside the image or empty after clipping",
                    d.name, d.reader.dropped_boxes,
                )  # fmt: skip
        count = self.skipped
        if count:
            LOG.warning("skipped %d frame(s) with bad input (on_error=skip)", count)
        return count


def build_dataset(
    cfg: DataConfig,
    split: str = "train",
    transform: Transform | str | None = "auto",
    *,
    drop_skipped: bool = False,
) -> MultiSetDataset:
    """Build every image set of `cfg` for `split`, honouring the active label setting.

    `transform="auto"` builds `build_transforms(cfg.transforms, train=split == "train")`; pass a
    callable or None to choose yourself. With `drop_skipped` (evaluation) a frame skipped under
    `on_error: skip` reads as None instead of being replaced by the next good frame.
    """
    from drivemtl.data.transforms import build_transforms

    if transform == "auto":
        transform = build_transforms(cfg.transforms, train=split == "train")
    selections = cfg.label_settings.get(cfg.label_setting) if cfg.label_setting else None
    datasets = []
    for name, set_cfg in cfg.sets.items():
        if set_cfg.splits is not None and split not in set_cfg.splits:
            continue
        subset = set_cfg.subset
        if selections is not None:
            if name not in selections:
                continue
            selection = selections[name]
            updates: dict = {}
            if selection.tasks is not None:
                missing = set(selection.tasks) - set(set_cfg.tasks)
                if missing:
                    raise ValueError(
                        f"label setting {cfg.label_setting!r}: set {name!r} has no {sorted(missing)}"
                    )
                updates["tasks"] = selection.tasks
            set_cfg = set_cfg.model_copy(update=updates)
            subset = selection.subset or subset
        reader_cls = READERS.get(set_cfg.reader)
        reader = reader_cls(name, set_cfg, split, on_error=cfg.on_error)
        datasets.append(
            ImageSetDataset(
                reader,
                set_cfg,
                transform,
                cfg.on_error,
                _subset_indices(reader, subset),
                drop_skipped=drop_skipped,
            )
        )
    if not datasets:
        raise ValueError(f"no image set is part of split {split!r}")
    return MultiSetDataset(datasets)
