"""A stage's data as one resumable stream of batches, with per-sample seeded randomness.

A stage lasts `total` batches drawn from a multi-set batch sampler epoch after epoch
(`set_epoch(e)` before each pass). `StreamBatchSampler(start=k)` continues exactly where a run
that consumed k batches stopped; every sample carries its own seed (from run seed, stage, rank and
position) and `SeededDataset` draws its augmentation under that seed, so the data do not depend on
worker count, prefetching or how often the run was interrupted.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any, Protocol

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler


class EpochBatchSampler(Protocol):
    """A batch sampler over one epoch whose order depends on `set_epoch` (the data layer's)."""

    def set_epoch(self, epoch: int) -> None: ...

    def __iter__(self) -> Iterator[list[int]]: ...

    def __len__(self) -> int: ...


def sample_seed(*keys: int) -> int:
    """A 32-bit seed derived from integer keys (numpy SeedSequence, stable across platforms)."""
    return int(np.random.SeedSequence([int(k) & 0xFFFFFFFF for k in keys]).generate_state(1)[0])


class StreamBatchSampler(Sampler[list[tuple[int, int]]]):
    """`total` batches of (index, seed) pairs from `sampler`, epoch after epoch, from `start` on.

    `len()` is `total` (the whole stage) even when `start > 0`: the training loop keeps counting
    batches from where the interrupted run stopped and only the remaining ones are yielded.
    """

    def __init__(
        self,
        sampler: EpochBatchSampler,
        total: int,
        start: int = 0,
        seed_keys: tuple[int, ...] = (),
    ) -> None:
        if len(sampler) == 0:
            raise ValueError(
                "the batch sampler yields no batch (fewer frames than the batch size?)"
            )
        if not 0 <= start <= total:
            raise ValueError(f"start {start} outside the stream of {total} batches")
        self.sampler = sampler
        self.total = int(total)
        self.start = int(start)
        self.seed_keys = tuple(seed_keys)

    @property
    def batches_per_epoch(self) -> int:
        """Batches in one pass of the underlying sampler."""
        return len(self.sampler)

    def __len__(self) -> int:
        return self.total

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        per_epoch = len(self.sampler)
        position = (self.start // per_epoch) * per_epoch
        epoch = self.start // per_epoch
        while position < self.total:
            self.sampler.set_epoch(epoch)
            for batch in self.sampler:
                if position >= self.total:
                    return
                if position >= self.start:
                    yield [
                        (int(i), sample_seed(*self.seed_keys, position, j))
                        for j, i in enumerate(batch)
                    ]
                position += 1
            epoch += 1


class SeededDataset(Dataset[Any]):
    """Wraps a dataset so that item `(index, seed)` is read with torch / numpy / random seeded.

    The global random states are restored afterwards, so reading data never disturbs the
    randomness the model uses (e.g. RoI sampling) — a requirement for exact resume.
    """

    def __init__(self, dataset: Dataset[Any]) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, item: tuple[int, int]) -> Any:
        index, seed = item
        py_state = random.getstate()
        np_state = np.random.get_state()  # noqa: NPY002 (global state on purpose)
        with torch.random.fork_rng(devices=[]):
            # The CPU generator only: `torch.manual_seed` also seeds every accelerator backend,
            # which costs a Python stack capture each (lazily, before CUDA starts) and would reset
            # the GPU's random stream that `fork_rng(devices=[])` does not restore.
            torch.random.default_generator.manual_seed(seed)
            random.seed(seed)
            np.random.seed(seed)  # noqa: NPY002 (global state on purpose)
            try:
                return self.dataset[index]
            finally:
                random.setstate(py_state)
                np.random.set_state(np_state)  # noqa: NPY002 (global state on purpose)
