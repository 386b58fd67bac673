"""Frames per second of the synthetic world: rendering only, and rendering + writing every label.

Usage: python benchmarks/synth_speed.py [--size 640x360] [--frames 24] [--workers 1]
Goal (issue 3): >= 20 frames/s at 640x360 with all labels on one core; must be >= 10.
Both wall-clock and CPU-time rates are printed: on a shared machine the CPU-time rate is the
single-core speed.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from drivemtl.data.synthetic import generate_dataset, parse_size, render_sequence


def main() -> None:
    """Print render-only and render+write frames/s."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", default="640x360")
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    size = parse_size(args.size)

    start, cpu = time.perf_counter(), time.process_time()
    count = 0
    for seed in range(max(1, args.frames // 8)):
        for _ in render_sequence(8, size, seed=seed):
            count += 1
    wall = count / (time.perf_counter() - start)
    per_cpu = count / (time.process_time() - cpu)
    print(
        f"render only, all labels, 1 process, {args.size}: "
        f"{wall:.1f} frames/s wall, {per_cpu:.1f} frames per CPU second"
    )

    with tempfile.TemporaryDirectory() as tmp:
        start, cpu = time.perf_counter(), time.process_time()
        generate_dataset(
            tmp + "/ds", "all", args.frames, size, seed=0, workers=args.workers, progress=False
        )
        wall = args.frames / (time.perf_counter() - start)
        per_cpu = args.frames / (time.process_time() - cpu)
    note = f", {per_cpu:.1f} frames per CPU second" if args.workers == 1 else ""
    print(
        f"render + write preset 'all', {args.workers} worker(s), {args.size}: "
        f"{wall:.1f} frames/s wall{note}"
    )


if __name__ == "__main__":
    main()
