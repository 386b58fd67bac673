"""A torch DataLoader over a MultiSetDataset with a batch sampler, yielding collated Batches."""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial

from torch.utils.data import DataLoader, Sampler

from drivemtl.data.dataset import MultiSetDataset
from drivemtl.structures.batch import Batch, collate


class BatchLoader(DataLoader):
    """DataLoader that reports the frames skipped for bad input (on_error=skip) after each pass."""

    def __iter__(self) -> Iterator[Batch]:  # type: ignore[override]
        yield from super().__iter__()
        if isinstance(self.dataset, MultiSetDataset):
            self.dataset.report_skipped()


def build_loader(
    dataset: MultiSetDataset,
    sampler: Sampler[list[int]],
    num_workers: int = 2,
    *,
    size_divisor: int = 32,
    pin_memory: bool = False,
    persistent_workers: bool = False,
) -> BatchLoader:
    """DataLoader driven by a batch sampler (see `drivemtl.data.samplers`) and `collate`."""
    return BatchLoader(
        dataset,
        batch_sampler=sampler,
        num_workers=num_workers,
        collate_fn=partial(collate, size_divisor=size_divisor),
        pin_memory=pin_memory,
        persistent_workers=persistent_workers and num_workers > 0,
    )
