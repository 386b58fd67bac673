"""A torch DataLoader over a MultiSetDataset with a batch sampler, yielding collated Batches."""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial

from torch.utils.data import DataLoader, Sampler

from drivemtl.data.dataset import MultiSetDataset
from drivemtl.structures.batch import Batch, collate
from drivemtl.structures.sample import Sample


def collate_read(samples: list[Sample | None], size_divisor: int = 32) -> Batch | None:
    """Collate the frames that were read, leaving out dropped ones (None); None if all were."""
    kept = [s for s in samples if s is not None]
    return collate(kept, size_divisor=size_divisor) if kept else None


class BatchLoader(DataLoader):
    """DataLoader that reports the frames skipped for bad input (on_error=skip) after each pass.

    A batch whose every frame was dropped (`build_dataset(..., drop_skipped=True)`) is not yielded.
    """

    def __iter__(self) -> Iterator[Batch]:  # type: ignore[override]
        for batch in super().__iter__():
            if batch is not None:
                yield batch
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
        collate_fn=partial(collate_read, size_divisor=size_divisor),
        pin_memory=pin_memory,
        persistent_workers=persistent_workers and num_workers > 0,
    )
