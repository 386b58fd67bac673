"""Batches of random, already normalised images for the export tests."""

from __future__ import annotations

import torch

from drivemtl.structures.batch import Batch, collate
from drivemtl.structures.sample import Sample, SampleMeta


def make_batch(sizes: list[tuple[int, int]], seed: int = 0) -> Batch:
    """A collated batch of random images of the given (h, w) sizes, padded to 32."""
    generator = torch.Generator().manual_seed(seed)
    samples = [
        Sample(
            image=torch.randn(3, h, w, generator=generator),
            meta=SampleMeta(name=f"f{i}.png", image_set="t", orig_size=(h, w), image_size=(h, w)),
        )
        for i, (h, w) in enumerate(sizes)
    ]
    return collate(samples, 32)
