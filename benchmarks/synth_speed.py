"""Frames per second of the synthetic world: rendering only, and rendering + writing every label.

Usage: python benchmarks/synth_speed.py [--size 640x360] [--frames 24] [--workers 1] [--repeat 3]
Goal (issue 3): >= 20 frames/s at 640x360 with all labels on one core; must be >= 10.
Both wall-clock and CPU-time rates are printed: on a shared machine the CPU-time rate is the
single-core speed. Each measurement runs `--repeat` times and the fastest run is reported (other
processes only ever slow a run down, also in CPU time, through shared caches and cores).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from drivemtl.data.synthetic import generate_dataset, parse_size, render_sequence


def main() -> None:
    """Print render-only and render+write frames/s."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", default="640x360")
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=3, help="runs per measurement (best kept)")
    args = parser.parse_args()
    size = parse_size(args.size)

    def render() -> int:
        count = 0
        for seed in range(max(1, args.frames // 8)):
            for _ in render_sequence(8, size, seed=seed):
                count += 1
        return count

    wall, per_cpu = _best_rates(render, args.repeat)
    print(
        f"render only, all labels, 1 process, {args.size}: "
        f"{wall:.1f} frames/s wall, {per_cpu:.1f} frames per CPU second"
    )
    with tempfile.TemporaryDirectory() as tmp:  # deleting the files is not timed

        def render_and_write() -> int:
            out = f"{tmp}/ds{len(os.listdir(tmp))}"
            generate_dataset(
                out, "all", args.frames, size, seed=0, workers=args.workers, progress=False
            )
            return args.frames

        wall, per_cpu = _best_rates(render_and_write, args.repeat)
    note = f", {per_cpu:.1f} frames per CPU second" if args.workers == 1 else ""
    print(
        f"render + write preset 'all', {args.workers} worker(s), {args.size}: "
        f"{wall:.1f} frames/s wall{note}"
    )


def _best_rates(run: Callable[[], int], repeat: int) -> tuple[float, float]:
    """The best wall-clock and CPU-time frame rates of `repeat` calls of `run` (returns frames)."""
    walls, cpus = [], []
    for _ in range(max(1, repeat)):
        start, cpu = time.perf_counter(), time.process_time()
        count = run()
        walls.append(count / (time.perf_counter() - start))
        cpus.append(count / (time.process_time() - cpu))
    return max(walls), max(cpus)


if __name__ == "__main__":
    main()
