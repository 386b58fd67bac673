"""Seconds to evaluate N frames (default 2,000) per task with DriveMTL's evaluators.

Synthetic but realistic-sized inputs: 20 boxes per frame for detection / tracking (50-frame videos),
720x1280 semantic maps, 720x1280 lane bitmasks with four 8-pixel-wide lanes across the lower half,
720x1280 RGBA MOTS bitmasks with 20 instances (read from PNG files). Lanes and MOTS time a subset
and scale to N. Usage: python benchmarks/eval_speed.py [N]
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from drivemtl.evaluation.coco import CocoEvaluator
from drivemtl.evaluation.lanes import LaneEvaluator
from drivemtl.evaluation.seg_track import SegTrackEvaluator
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


def _lane_frame() -> np.ndarray:
    """Four lanes (categories 1..4, solid / dashed) from the bottom edge towards the horizon."""
    frame = np.full((720, 1280), 8, np.uint8)
    for k, (x0, x1) in enumerate(((100, 560), (450, 620), (830, 660), (1180, 720))):
        cv2.line(frame, (x0, 719), (x1, 380), int(k + 1 + (k % 2) * 16), thickness=8)
    return frame


def _mots_seconds(n: int, frames: int) -> float:
    """Seconds for `n` frames of MOTS bitmask evaluation, timed on `frames` written to PNG."""
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        gts, preds = [], []
        for f in range(frames):
            for side, shift in (("gt", 0), ("pred", 3)):
                rgba = np.zeros((720, 1280, 4), np.uint8)
                for k in range(20):
                    y, x = int(rng.integers(0, 600)), int(rng.integers(0, 1150))
                    rgba[y + shift : y + 100 + shift, x : x + 120] = (k % 8 + 1, 0, 0, k + 1)
                path = Path(tmp) / side / f"v{f // 50}" / f"{f:05d}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                cv2.imwrite(str(path), cv2.cvtColor(rgba, cv2.COLOR_RGBA2BGRA))
                (gts if side == "gt" else preds).append(path)
        t = time.perf_counter()
        mots = SegTrackEvaluator()
        for start in range(0, frames, 50):
            mots.add_bitmask_video(gts[start : start + 50], preds[start : start + 50])
        mots.compute()
        return (time.perf_counter() - t) * n / frames


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
    lane_gt = _lane_frame()
    lane_pd = np.roll(lane_gt, 2, axis=1)
    lane_frames = min(n, 200)
    t = time.perf_counter()
    lanes = LaneEvaluator()
    for _ in range(lane_frames):
        lanes.add_bytes(lane_gt, lane_pd)
    lanes.compute()
    timings["lanes (720x1280)"] = (time.perf_counter() - t) * n / lane_frames
    timings["seg_track (720x1280 bitmasks)"] = _mots_seconds(n, min(n, 100))
    for name, seconds in timings.items():
        print(f"{name:32s} {n:6d} frames {seconds:8.2f} s")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 2000)
