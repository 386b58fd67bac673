"""Time of one QDTrack tracker update: 100 detections against 100 memory entries, one CPU thread.

The target (issue 17): well under 5 ms per frame. The same 100 objects (random boxes of 8
classes, 256-d embeddings) are seen in every frame with jittered boxes, scores and embeddings,
so the memory holds 100 live tracklets (plus the backdrops of the frame before). Median and
range over repeated frames.

    python benchmarks/tracker_speed.py [--detections 100] [--frames 200]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from drivemtl.ops.embedding_tracker import QuasiDenseTracker, TrackerMemory


def random_frame(n: int, generator: torch.Generator) -> tuple[torch.Tensor, ...]:
    """n boxes in a 1280x720 frame with scores, 8 classes and 256-d embeddings."""
    xy = torch.rand(n, 2, generator=generator) * torch.tensor([1200.0, 650.0])
    wh = 10 + torch.rand(n, 2, generator=generator) * 60
    boxes = torch.cat((xy, xy + wh), dim=1)
    scores = 0.3 + 0.7 * torch.rand(n, generator=generator)
    labels = torch.randint(0, 8, (n,), generator=generator)
    embeds = torch.randn(n, 256, generator=generator)
    return boxes, scores, labels, embeds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--detections", type=int, default=100)
    parser.add_argument("--frames", type=int, default=200)
    args = parser.parse_args()
    torch.set_num_threads(1)
    generator = torch.Generator().manual_seed(0)
    tracker, memory = QuasiDenseTracker(), TrackerMemory()
    boxes, scores, labels, embeds = random_frame(args.detections, generator)
    tracker.update(memory, boxes, torch.full_like(scores, 0.9), labels, embeds, frame=0)
    times = []
    for t in range(1, args.frames + 1):
        jitter = torch.randn(boxes.shape, generator=generator)
        noisy = embeds + 0.1 * torch.randn(embeds.shape, generator=generator)
        start = time.perf_counter()
        tracker.update(memory, boxes + jitter, scores, labels, noisy, frame=t)
        times.append((time.perf_counter() - start) * 1000)
    print(f"tracker update, {args.detections} detections, ~{len(memory.tracklets)} live "
          f"tracklets at the end, 1 thread: median {statistics.median(times):.2f} ms "
          f"(p90 {sorted(times)[int(0.9 * len(times))]:.2f}, min {min(times):.2f}, "
          f"max {max(times):.2f})")  # fmt: skip


if __name__ == "__main__":
    main()
