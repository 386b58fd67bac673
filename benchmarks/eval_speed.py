"""Seconds to evaluate N frames (default 2,000) per task with DriveMTL's evaluators.

Synthetic but realistic-sized inputs: 20 boxes per frame for detection / tracking (50-frame videos),
one pose per frame, 720x1280 semantic / lane maps. Usage: python benchmarks/eval_speed.py [N]
"""

from __future__ import annotations

import sys
import time

import numpy as np

from drivemtl.evaluation.coco import CocoEvaluator
from drivemtl.evaluation.lanes import LaneEvaluator
from drivemtl.evaluation.segmentation import SegmentationEvaluator
from drivemtl.evaluation.tracking import BoxTrackEvaluator
from drivemtl.structures import bdd
from drivemtl.structures.scalabel import Frame


def _boxes(rng: np.random.Generator, n: int, jitter: float = 0.0) -> np.ndarray:
    xy = rng.uniform(0, 1100, (n, 2))
    wh = rng.uniform(20, 150, (n, 2))
    return np.concatenate([xy, xy + wh], axis=1) + rng.normal(0, jitter, (n, 4))


def _frames(n_frames: int, pred: bool, seed: int) -> list[Frame]:
    rng = np.random.default_rng(0)
    noise = np.random.default_rng(seed)
    frames = []
    for f in range(n_frames):
        boxes = _boxes(rng, 20)
        if pred:
            boxes = boxes + noise.normal(0, 4, boxes.shape)
            boxes[:, 2:] = np.maximum(boxes[:, 2:], boxes[:, :2] + 1)
        labels = [{"id": str(k + 1), "category": bdd.THING_CLASSES[k % 8], "score": 0.5 + 0.02 * k,
                   "box2d": dict(zip(("x1", "y1", "x2", "y2"), b.tolist(), strict=True))}
                  for k, b in enumerate(boxes)]  # fmt: skip
        frames.append(Frame.model_validate({"name": f"v{f // 50}-{f}.jpg", "videoName": f"v{f // 50}",
                                            "frameIndex": f % 50, "labels": labels}))  # fmt: skip
    return frames


def main(n: int) -> None:
    """Print one line per task: frames and seconds."""
    gt, pred = _frames(n, False, 1), _frames(n, True, 2)
    timings = {}
    t = time.perf_counter()
    det = CocoEvaluator("bbox", bdd.THING_CLASSES)
    det.update_frames(gt, pred)
    det.compute()
    timings["detection (COCO AP)"] = time.perf_counter() - t
    t = time.perf_counter()
    mot = BoxTrackEvaluator()
    mot.update_frames(gt, pred)
    mot.compute()
    timings["box_track (CLEAR, IDF1, HOTA)"] = time.perf_counter() - t
    rng = np.random.default_rng(0)
    gt_map = rng.integers(0, 19, (720, 1280), dtype=np.uint8)
    pd_map = np.where(rng.random((720, 1280)) < 0.8, gt_map, 0).astype(np.uint8)
    t = time.perf_counter()
    seg = SegmentationEvaluator()
    for _ in range(n):
        seg.add(gt_map, pd_map)
    seg.compute()
    timings["semantic (720x1280)"] = time.perf_counter() - t
    lane_gt = np.full((720, 1280), 8, np.uint8)
    lane_gt[300:306, 100:1100] = 0b0000_0110
    lane_pd = np.roll(lane_gt, 2, axis=0)
    lane_frames = min(n, 200)
    t = time.perf_counter()
    lanes = LaneEvaluator()
    for _ in range(lane_frames):
        lanes.add_bytes(lane_gt, lane_pd)
    lanes.compute()
    timings["lanes (720x1280)"] = (time.perf_counter() - t) * n / lane_frames
    for name, seconds in timings.items():
        print(f"{name:32s} {n:6d} frames {seconds:8.2f} s")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 2000)
