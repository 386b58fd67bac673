"""Data-loading throughput: samples/s for 640x360 synthetic frames carrying every label type.

Generates a small synthetic dataset (preset `all`: tagging, semantic, drivable, lanes, boxes,
instance masks, pose, depth, normals, edges, track ids, flow + reference frames) unless `--data`
points at one, then times the full path: reader -> train transforms -> collate, with a
`set_round_robin` batch sampler and a 2-worker DataLoader.

    python benchmarks/data_speed.py [--frames 48] [--workers 2] [--batch-size 4] [--data DIR]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch


def main() -> None:
    """Print samples/s of the DataLoader (and of a single process, for reference)."""
    from drivemtl.data import SAMPLERS, build_dataset, build_loader, data_config_from_card
    from drivemtl.data.synthetic import generate_dataset

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=48)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--data", type=Path, default=None, help="existing synthetic dataset")
    args = parser.parse_args()
    torch.set_num_threads(1)

    with tempfile.TemporaryDirectory() as tmp:
        data = args.data
        if data is None:
            data = Path(tmp) / "all"
            start = time.perf_counter()
            generate_dataset(data, preset="all", num_frames=args.frames, size=(640, 360),
                             seed=0, workers=2, progress=False)  # fmt: skip
            print(f"generated {args.frames} frames in {time.perf_counter() - start:.1f} s")
        transforms = {"heights": [360], "flip": 0.5, "photometric": True}
        cfg = data_config_from_card(data, reference="next", transforms=transforms)
        dataset = build_dataset(cfg, "train")
        tasks = sorted(dataset.set_tasks(dataset.sets[0]))
        print(f"{len(dataset)} samples of 640x360 with reference frames; tasks: {', '.join(tasks)}")

        start = time.perf_counter()
        n = min(len(dataset), 16)
        for i in range(n):
            dataset[i]
        single = n / (time.perf_counter() - start)
        print(f"single process, no collate: {single:.1f} samples/s")

        sampler = SAMPLERS.get("set_round_robin")(dataset, args.batch_size)
        loader = build_loader(dataset, sampler, num_workers=args.workers, persistent_workers=True)
        next(iter(loader))  # start the workers before timing
        count = 0
        start = time.perf_counter()
        for epoch in range(args.epochs):
            sampler.set_epoch(epoch)
            for batch in loader:
                count += len(batch)
        elapsed = time.perf_counter() - start
        print(f"DataLoader, {args.workers} workers, batch {args.batch_size}: "
              f"{count / elapsed:.1f} samples/s ({count} samples in {elapsed:.1f} s)")  # fmt: skip


if __name__ == "__main__":
    main()
