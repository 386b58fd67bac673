"""The LightningDataModule of one stage: a multi-set batch sampler as a resumable seeded stream.

The dataset is built inside `setup` from the stage's `DataConfig` (picklable), so spawned DDP
processes build their own; each rank draws its slice of every global batch (see
`drivemtl.data.samplers`).
"""

from __future__ import annotations

from functools import partial
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader

from drivemtl.data import SAMPLERS, DataConfig, MultiSetDataset, build_dataset
from drivemtl.engine.stream import SeededDataset, StreamBatchSampler
from drivemtl.structures.batch import Batch, collate


class StageDataModule(L.LightningDataModule):
    """Training batches of one stage: `total_batches` batches of the named sampler.

    `resume_from(k)` (called when a checkpoint is restored) makes the loader skip the k batches the
    interrupted run already trained on.
    """

    def __init__(
        self,
        data: DataConfig,
        sampler: str,
        batch_size: int,
        tasks: list[str],
        total_batches: int,
        seed: int,
        stage_index: int,
        num_workers: int = 0,
        sampler_options: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.data = data
        self.sampler_name = sampler
        self.batch_size = batch_size
        self.tasks = tasks
        self.total_batches = total_batches
        self.seed = seed
        self.stage_index = stage_index
        self.num_workers = num_workers
        self.sampler_options = dict(sampler_options or {})
        self.start = 0
        self.dataset: MultiSetDataset | None = None

    def resume_from(self, consumed: int) -> None:
        """Continue the stream after `consumed` batches."""
        self.start = int(consumed)

    def setup(self, stage: str) -> None:
        """Build the training dataset (in every process)."""
        if self.dataset is None:
            self.dataset = build_dataset(self.data, "train")

    def transfer_batch_to_device(
        self, batch: Any, device: torch.device, dataloader_idx: int
    ) -> Any:
        """`Batch.to` directly (a dict of them for paired streams): Lightning's generic walk
        over the container costs ~10 ms a step."""
        if isinstance(batch, Batch):
            return batch.to(device)
        if isinstance(batch, dict) and all(isinstance(b, Batch) for b in batch.values()):
            return {k: b.to(device) for k, b in batch.items()}
        return super().transfer_batch_to_device(batch, device, dataloader_idx)

    def train_dataloader(self) -> DataLoader:
        """DataLoader over this rank's seeded stream of (index, seed) batches."""
        if self.dataset is None:
            self.setup("fit")
        assert self.dataset is not None
        rank, world = self.trainer.global_rank, self.trainer.world_size
        sampler = SAMPLERS.get(self.sampler_name)(
            self.dataset,
            self.batch_size,
            rank=rank,
            world_size=world,
            seed=self.seed,
            tasks=self.tasks,
            **self.sampler_options,
        )
        stream = StreamBatchSampler(
            sampler, self.total_batches, self.start, seed_keys=(self.seed, self.stage_index, rank)
        )
        return DataLoader(
            SeededDataset(self.dataset),
            batch_sampler=stream,
            num_workers=self.num_workers,
            collate_fn=partial(collate, size_divisor=self.data.size_divisor),
            persistent_workers=False,
        )
