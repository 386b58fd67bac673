"""The resumable batch stream: epochs in order, exact continuation, seeded samples."""

from __future__ import annotations

import random

import numpy as np
import torch

from drivemtl.engine.stream import SeededDataset, StreamBatchSampler


class ShuffledBatches:
    """A toy epoch batch sampler: a permutation of 6 indices per epoch, batches of 2."""

    def __init__(self) -> None:
        self.epoch = 0
        self.epochs_seen: list[int] = []

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.epochs_seen.append(epoch)

    def __iter__(self):
        g = torch.Generator().manual_seed(self.epoch)
        order = torch.randperm(6, generator=g).tolist()
        return iter([order[i : i + 2] for i in range(0, 6, 2)])

    def __len__(self) -> int:
        return 3


def test_stream_spans_epochs_and_resumes_exactly() -> None:
    full_sampler = ShuffledBatches()
    full = list(StreamBatchSampler(full_sampler, total=7, seed_keys=(1, 2)))
    assert len(full) == 7 and full_sampler.epochs_seen == [0, 1, 2]
    expected_indices = []
    for epoch in range(3):
        g = torch.Generator().manual_seed(epoch)
        order = torch.randperm(6, generator=g).tolist()
        expected_indices += [order[i : i + 2] for i in range(0, 6, 2)]
    assert [[i for i, _ in b] for b in full] == expected_indices[:7]
    for start in range(8):
        resumed_sampler = ShuffledBatches()
        resumed = StreamBatchSampler(resumed_sampler, total=7, start=start, seed_keys=(1, 2))
        assert len(resumed) == 7
        assert list(resumed) == full[start:]
    # seeds differ between positions and between seed keys (runs / ranks)
    seeds = [s for b in full for _, s in b]
    assert len(set(seeds)) == len(seeds)
    other = list(StreamBatchSampler(ShuffledBatches(), total=7, seed_keys=(1, 3)))
    assert [s for _, s in other[0]] != [s for _, s in full[0]]


class RandomItems(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 4

    def __getitem__(self, i: int):
        return (torch.rand(()).item(), np.random.rand(), random.random())  # noqa: NPY002


def test_seeded_dataset_is_reproducible_and_leaves_global_rng_alone() -> None:
    data = SeededDataset(RandomItems())
    torch.manual_seed(0)
    before = torch.get_rng_state()
    a = data[(1, 123)]
    assert torch.equal(torch.get_rng_state(), before)
    assert data[(2, 123)] == a  # same seed, same draw
    assert data[(1, 124)] != a


def test_seeded_dataset_draws_the_stream_of_torch_manual_seed() -> None:
    """Only the CPU generator is seeded, with the very stream `torch.manual_seed` would give."""
    torch.manual_seed(7)
    expected = torch.rand(()).item()
    assert SeededDataset(RandomItems())[(0, 7)][0] == expected
