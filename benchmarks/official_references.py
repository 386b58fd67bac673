"""Regenerate the official BDD100K / Scalabel reference numbers under tests/evaluation/data/refs.

Opt-in, outside `make test`: it needs the official toolkit (`bdd100k` 1.0.1 on `scalabel` 0.3.1,
which pins numpy < 2 / pydantic < 2), so it runs with that environment's interpreter and never
imports drivemtl:

    /tmp/bdd-official/bin/python benchmarks/official_references.py [--fixtures ../shared/fixtures]

It writes small inputs, seeded and generated from the real-format fixtures (jittered boxes /
masks / joints, dropped and extra detections, swapped track ids, frames that do not line up:
missing, extra and repeated frames, a missing video, overlapping masks) plus the official
evaluators' outputs on them, flattened to `metric` (OVERALL) and `metric/<row>` keys, in
refs/official.json. HOTA / DetA / AssA, which the official toolkit does not compute, come from
`hota_reference` below: a float64 implementation of Luiten et al. (IJCV 2021) written from the
paper, on the per-class data the official CLEAR preprocessing keeps (crowd-covered unmatched
predictions dropped). tests/evaluation/test_official_refs.py compares every key to 1e-6.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import math
import shutil
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "tests/evaluation/data/refs"
H, W = 48, 80  # generated mask size (small files)


# ----------------------------------------------------------------------------- helpers
def _write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, separators=(",", ":")) + "\n", encoding="utf-8")


def _flatten(result: dict[str, Any]) -> dict[str, float | None]:
    """Official nested result -> `metric` (OVERALL) / `metric/<row>`; NaN as None (JSON)."""
    flat: dict[str, float | None] = {}

    def put(key: str, value: Any) -> None:
        value = float(value)
        flat[key] = None if math.isnan(value) else (value if math.isfinite(value) else str(value))

    for metric, scores in result.items():
        if not isinstance(scores, list):
            put(metric, scores)
            continue
        for row in scores:
            for name, value in row.items():
                put(metric if name == "OVERALL" else f"{metric}/{name}", value)
    return flat


def _rle(mask: np.ndarray) -> dict[str, Any]:
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"counts": rle["counts"].decode("ascii"), "size": [int(s) for s in rle["size"]]}


def _config(source: Path, target: Path, height: int, width: int) -> None:
    """A copy of a BDD100K config TOML with the generated image size."""
    text = source.read_text(encoding="utf-8")
    text = text.replace("height = 720", f"height = {height}").replace(
        "width = 1280", f"width = {width}"
    )
    target.write_text(text, encoding="utf-8")


def _jitter_box(rng: np.random.Generator, box: dict[str, float], scale: float) -> dict[str, float]:
    w, h = box["x2"] - box["x1"], box["y2"] - box["y1"]
    d = rng.normal(0.0, scale, 4) * np.array([w, h, w, h])
    x1, y1, x2, y2 = box["x1"] + d[0], box["y1"] + d[1], box["x2"] + d[2], box["y2"] + d[3]
    return {"x1": round(float(min(x1, x2 - 1)), 2), "y1": round(float(min(y1, y2 - 1)), 2),
            "x2": round(float(max(x2, x1 + 1)), 2), "y2": round(float(max(y2, y1 + 1)), 2)}  # fmt: skip


def _random_box(rng: np.random.Generator) -> dict[str, float]:
    x1, y1 = rng.uniform(0, 1100), rng.uniform(0, 600)
    w, h = rng.uniform(8, 180), rng.uniform(8, 120)
    return {"x1": round(x1, 2), "y1": round(y1, 2), "x2": round(x1 + w, 2), "y2": round(y1 + h, 2)}


def _slim(label: dict[str, Any]) -> dict[str, Any]:
    """A fixture label with only what evaluation reads (id, category, crowd, rounded box)."""
    box = {k: round(float(v), 2) for k, v in label["box2d"].items()}
    crowd = bool((label.get("attributes") or {}).get("crowd"))
    return {"id": label["id"], "category": label["category"],
            "attributes": {"crowd": True} if crowd else {}, "box2d": box}  # fmt: skip


DET_CLASSES = ["pedestrian", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle",
               "traffic light", "traffic sign"]  # fmt: skip


# ----------------------------------------------------------------------------- inputs
def make_det(fixtures: Path, out: Path, rng: np.random.Generator) -> None:
    """8 real frames: jittered / dropped / relabelled boxes, extra boxes, one missing and one
    extra prediction frame, tied scores."""
    frames = json.loads((fixtures / "box_track/track_sample_anns.json").read_text())[:8]
    gt = [{"name": f["name"], "labels": [_slim(lab) for lab in f["labels"]]} for f in frames]
    preds = []
    for frame in gt[1:]:  # frame 0 has no prediction
        labels = []
        for label in frame["labels"]:
            if rng.random() < 0.15:
                continue
            category = label["category"]
            if rng.random() < 0.05:
                category = DET_CLASSES[int(rng.integers(len(DET_CLASSES)))]
            labels.append({"id": str(len(labels)), "category": category,
                           "box2d": _jitter_box(rng, label["box2d"], 0.06),
                           "score": round(float(rng.uniform(0.3, 1.0)), 2)})  # fmt: skip
        for _ in range(int(rng.integers(1, 4))):
            labels.append({"id": str(len(labels)),
                           "category": DET_CLASSES[int(rng.integers(len(DET_CLASSES)))],
                           "box2d": _random_box(rng), "score": round(float(rng.uniform(0, 0.6)), 2)})  # fmt: skip
        preds.append({"name": frame["name"], "labels": labels})
    preds.append({"name": "not-in-gt.jpg", "labels": preds[0]["labels"]})
    _write_json(out / "gt.json", gt)
    _write_json(out / "pred.json", preds)
    shutil.copy(fixtures / "configs/det.toml", out / "config.toml")


def _paint_instances(
    rng: np.random.Generator, n: int, classes: int
) -> tuple[np.ndarray, list[int]]:
    """An instance map (0 = none) of `n` random rectangles / ellipses and their classes."""
    canvas = np.zeros((H, W), np.int32)
    yy, xx = np.mgrid[0:H, 0:W]
    cats = []
    for k in range(1, n + 1):
        cy, cx = rng.uniform(6, H - 6), rng.uniform(6, W - 6)
        ry, rx = rng.uniform(3, 12), rng.uniform(3, 18)
        if rng.random() < 0.5:
            shape = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
        else:
            shape = (abs(yy - cy) <= ry) & (abs(xx - cx) <= rx)
        canvas[shape] = k
        cats.append(int(rng.integers(classes)))
    return canvas, cats


def _shift(mask: np.ndarray, dy: int, dx: int) -> np.ndarray:
    out = np.zeros_like(mask)
    ys, xs = np.nonzero(mask)
    ys, xs = ys + dy, xs + dx
    keep = (ys >= 0) & (ys < mask.shape[0]) & (xs >= 0) & (xs < mask.shape[1])
    out[ys[keep], xs[keep]] = 1
    return out


INS_CLASSES = ["pedestrian", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle"]


def make_ins_seg(fixtures: Path, out: Path, rng: np.random.Generator) -> None:
    """6 frames of disjoint instance masks; predictions shifted / dropped / extra, one frame with
    overlapping predicted masks (the toolkit drops its predictions), one missing, one crowd."""
    gt, preds = [], []
    for f in range(6):
        canvas, cats = _paint_instances(rng, int(rng.integers(3, 7)), len(INS_CLASSES))
        labels, pred_labels = [], []
        pred_canvas = np.zeros((H, W), np.int32)
        for k, cat in enumerate(cats, start=1):
            mask = canvas == k
            if not mask.any():
                continue
            attrs = {"crowd": True} if (f == 2 and k == 1) else {}
            labels.append({"id": str(k), "category": INS_CLASSES[cat], "attributes": attrs,
                           "rle": _rle(mask)})  # fmt: skip
            if rng.random() < 0.2:
                continue
            shifted = _shift(mask, int(rng.integers(-2, 3)), int(rng.integers(-2, 3)))
            pred_canvas[(shifted > 0) & (pred_canvas == 0)] = k
        extra, extra_cats = _paint_instances(rng, 2, len(INS_CLASSES))
        for k in range(1, 3):
            pred_canvas[(extra == k) & (pred_canvas == 0)] = 100 + k
        for k in np.unique(pred_canvas[pred_canvas > 0]):
            cat = cats[k - 1] if k < 100 else extra_cats[k - 101]
            if k < 100 and rng.random() < 0.1:
                cat = int(rng.integers(len(INS_CLASSES)))
            pred_labels.append({"id": str(k), "category": INS_CLASSES[cat],
                                "score": round(float(rng.uniform(0.2, 1.0)), 3),
                                "rle": _rle(pred_canvas == k)})  # fmt: skip
        if f == 4 and len(pred_labels) >= 2:  # an overlapping mask: the frame's preds are dropped
            pred_labels.append({**pred_labels[0], "id": "dup", "score": 0.5})
        name = f"ins-{f}.jpg"
        gt.append({"name": name, "labels": labels})
        if f != 5:
            preds.append({"name": name, "labels": pred_labels})
    _write_json(out / "gt.json", gt)
    _write_json(out / "pred.json", preds)
    _config(fixtures / "configs/ins_seg.toml", out / "config.toml", H, W)


def make_pose(fixtures: Path, out: Path, rng: np.random.Generator) -> None:
    """The real pose frames, one repeated in the ground truth (with fewer labels), jittered joints,
    a prediction frame given twice (the last copy counts) and one not in the ground truth."""
    gt = json.loads((fixtures / "pose/pose_sample.json").read_text())
    preds = json.loads((fixtures / "pose/pose_preds.json").read_text())
    repeated = copy.deepcopy(gt[0])
    repeated["labels"] = repeated["labels"][:2]
    gt.append(repeated)
    jittered = copy.deepcopy(preds[1])
    for label in jittered["labels"]:
        for node in label["graph"]["nodes"]:
            node["location"] = [round(v + float(rng.normal(0, 4)), 2) for v in node["location"]]
        label["score"] = round(float(rng.uniform(0.3, 1)), 3)
    extra = {**copy.deepcopy(preds[0]), "name": "not-in-gt.jpg"}
    _write_json(out / "gt.json", gt)
    _write_json(out / "pred.json", [*preds, jittered, extra])
    shutil.copy(fixtures / "configs/pose.toml", out / "config.toml")


def _class_maps(rng: np.random.Generator, classes: int, n: int) -> list[np.ndarray]:
    maps = []
    for _ in range(n):
        m = np.full((H, W), 255, np.uint8)
        for _ in range(10):
            y, x = int(rng.integers(0, H - 8)), int(rng.integers(0, W - 8))
            m[y : y + int(rng.integers(6, 30)), x : x + int(rng.integers(6, 40))] = rng.integers(classes)  # fmt: skip
        maps.append(m)
    return maps


def _perturb(rng: np.random.Generator, m: np.ndarray, classes: int) -> np.ndarray:
    p = m.copy()
    p[p == 255] = rng.integers(classes)
    for _ in range(4):
        y, x = int(rng.integers(0, H - 6)), int(rng.integers(0, W - 6))
        p[y : y + 10, x : x + 14] = rng.integers(classes)
    return p


def make_sem_seg_rle(fixtures: Path, out: Path, rng: np.random.Generator) -> None:
    """4 frames of class maps as RLE labels; one prediction frame missing, one extra."""
    from scalabel.label.io import load_label_config  # noqa: F401  (checks the environment)

    names = _sem_seg_names(fixtures)
    gt, preds = [], []
    for f, m in enumerate(_class_maps(rng, len(names), 4)):
        p = _perturb(rng, m, len(names))
        name = f"seg-{f}.jpg"
        gt.append({"name": name, "labels": _rle_labels(m, names)})
        if f != 3:
            preds.append({"name": name, "labels": _rle_labels(p, names)})
    preds.append({"name": "not-in-gt.jpg", "labels": preds[0]["labels"]})
    _write_json(out / "gt.json", gt)
    _write_json(out / "pred.json", preds)
    _config(fixtures / "configs/sem_seg.toml", out / "config.toml", H, W)


def _sem_seg_names(fixtures: Path) -> list[str]:
    from bdd100k.common.utils import load_bdd100k_config
    from scalabel.label.utils import get_leaf_categories

    config = load_bdd100k_config(str(fixtures / "configs/sem_seg.toml"))
    return [c.name for c in get_leaf_categories(config.scalabel.categories)]


def _rle_labels(m: np.ndarray, names: list[str]) -> list[dict[str, Any]]:
    return [{"id": str(c), "category": names[c], "rle": _rle(m == c)}
            for c in sorted(int(v) for v in np.unique(m) if v != 255)]  # fmt: skip


def make_bitmasks(out: Path, rng: np.random.Generator, values: int, ignore: int) -> None:
    """5 bitmask PNGs per side (label values 0..values-1, `ignore` where unlabelled); one
    prediction missing, one extra."""
    from PIL import Image

    for side in ("gt", "pred"):
        (out / side).mkdir(parents=True, exist_ok=True)
    for f, m in enumerate(_class_maps(rng, values, 5)):
        p = _perturb(rng, m, values)
        Image.fromarray(np.where(m == 255, ignore, m).astype(np.uint8)).save(
            out / "gt" / f"bm-{f}.png"
        )
        if f != 4:
            Image.fromarray(p).save(out / "pred" / f"bm-{f}.png")
    Image.fromarray(p).save(out / "pred" / "not-in-gt.png")


def make_box_track(fixtures: Path, out: Path, rng: np.random.Generator) -> None:
    """20 real frames as two videos plus a 4-frame video without predictions; predictions keep
    the ground-truth ids with jitter, drops, a mid-video id swap and extra tracks (some of a class
    without ground truth, so its MOTA is -inf)."""
    frames = json.loads((fixtures / "box_track/track_sample_anns.json").read_text())[:24]
    gt, preds = [], []
    numbers: dict[str, int] = {}  # predicted track ids are integers in the official format
    for k, frame in enumerate(frames):
        video = "vid-a" if k < 12 else ("vid-b" if k < 20 else "vid-c")
        index = k if k < 12 else (k - 12 if k < 20 else k - 20)
        labels = [_slim(lab) for lab in frame["labels"]]
        gt.append({"name": frame["name"], "videoName": video, "frameIndex": index,
                   "labels": labels})  # fmt: skip
        if video == "vid-c":
            continue
        for lab in labels:
            numbers.setdefault(lab["id"], len(numbers) + 1)
        ids = [str(numbers[lab["id"]]) for lab in labels]
        swap = {ids[0]: ids[1], ids[1]: ids[0]} if video == "vid-a" and index >= 6 and len(ids) > 1 else {}  # fmt: skip
        pred_labels = []
        for lab, ident in zip(labels, ids, strict=True):
            if rng.random() < 0.15 or lab["attributes"]:
                continue
            pred_labels.append({"id": swap.get(ident, ident), "category": lab["category"],
                           "box2d": _jitter_box(rng, lab["box2d"], 0.05),
                           "score": round(float(rng.uniform(0.3, 1)), 3)})  # fmt: skip
        if index % 4 == 0:
            pred_labels.append({"id": "9001", "category": "train", "box2d": _random_box(rng),
                                "score": 0.4})  # fmt: skip
        if index % 3 == 0:
            pred_labels.append({"id": str(8000 + index), "category": "car",
                                "box2d": _random_box(rng), "score": 0.3})  # fmt: skip
        preds.append({"name": frame["name"], "videoName": video, "frameIndex": index,
                      "labels": pred_labels})  # fmt: skip
    _write_json(out / "gt.json", gt)
    _write_json(out / "pred.json", preds)
    shutil.copy(fixtures / "configs/box_track.toml", out / "config.toml")


TRACK_CLASSES = ["pedestrian", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle"]


def make_seg_track(fixtures: Path, out: Path, rng: np.random.Generator) -> None:
    """Two videos x 6 frames of moving disjoint masks (a crowd region in one), predictions
    shifted / dropped with an id swap and an extra track; a third video has no predictions."""
    gt, preds = [], []
    for v, video in enumerate(("mots-a", "mots-b", "mots-c")):
        starts = [(rng.uniform(8, H - 8), rng.uniform(10, W - 10)) for _ in range(4)]
        speed = [(rng.uniform(-2, 2), rng.uniform(-3, 3)) for _ in range(4)]
        cats = [int(rng.integers(len(TRACK_CLASSES))) for _ in range(4)]
        yy, xx = np.mgrid[0:H, 0:W]
        for t in range(6):
            canvas = np.zeros((H, W), np.int32)
            for k in range(4):
                cy, cx = starts[k][0] + t * speed[k][0], starts[k][1] + t * speed[k][1]
                canvas[((yy - cy) / 6) ** 2 + ((xx - cx) / 9) ** 2 <= 1] = k + 1
            labels = []
            for k in range(4):
                if (canvas == k + 1).any():
                    attrs = {"crowd": True} if (v == 1 and k == 3) else {}
                    labels.append({"id": str(k + 1), "category": TRACK_CLASSES[cats[k]],
                                   "attributes": attrs, "rle": _rle(canvas == k + 1)})  # fmt: skip
            name = f"{video}-{t}.jpg"
            gt.append({"name": name, "videoName": video, "frameIndex": t, "labels": labels})
            if video == "mots-c":
                continue
            pred_canvas = np.zeros((H, W), np.int32)
            for k in range(4):
                if rng.random() < 0.15:
                    continue
                m = _shift(canvas == k + 1, int(rng.integers(-1, 2)), int(rng.integers(-1, 2)))
                pred_canvas[(m > 0) & (pred_canvas == 0)] = k + 1
            y0 = int(rng.integers(0, H - 8))
            pred_canvas[y0 : y0 + 6, 0:8][pred_canvas[y0 : y0 + 6, 0:8] == 0] = 50
            pred_labels = []
            for k in np.unique(pred_canvas[pred_canvas > 0]):
                track = int(k)
                if v == 0 and t >= 3 and track in (1, 2):
                    track = 3 - track  # id swap
                cat = cats[k - 1] if k < 50 else 2
                pred_labels.append({"id": str(track), "category": TRACK_CLASSES[cat],
                                    "score": 0.9, "rle": _rle(pred_canvas == k)})  # fmt: skip
            preds.append({"name": name, "videoName": video, "frameIndex": t, "labels": pred_labels})
    _write_json(out / "gt.json", gt)
    _write_json(out / "pred.json", preds)
    _config(fixtures / "configs/seg_track.toml", out / "config.toml", H, W)


def make_seg_track_bitmask(out: Path, source: Path) -> None:
    """The seg_track case's first two videos (the third has no predictions, on which the official
    bitmask evaluator asserts) as BDD100K RGBA bitmask folders: R = class + 1, G = 0, B / A =
    instance id (per video, from the label ids); crowd regions left out."""
    from PIL import Image
    from pycocotools import mask as mask_utils

    for side in ("gt", "pred"):
        frames = json.loads((source / f"{side}.json").read_text())
        ids: dict[tuple[str, str], int] = {}
        for frame in frames:
            video = frame["videoName"]
            if video == "mots-c":
                continue
            planes = np.zeros((H, W, 4), np.uint8)
            for label in frame["labels"]:
                if (label.get("attributes") or {}).get("crowd"):
                    continue
                rle = {**label["rle"], "counts": label["rle"]["counts"].encode()}
                mask = mask_utils.decode(rle).astype(bool)
                ident = ids.setdefault((video, label["id"]), 1 + sum(k[0] == video for k in ids))
                planes[mask] = (TRACK_CLASSES.index(label["category"]) + 1, 0, ident >> 8,
                                ident & 255)  # fmt: skip
            path = out / side / video / f"{Path(frame['name']).stem}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(planes, "RGBA").save(path)
    shutil.copy(source / "config.toml", out / "config.toml")


# ----------------------------------------------------------------------------- official runs
def _bdd_frames(path: Path, config: Any) -> list[Any]:
    from bdd100k.label.to_scalabel import bdd100k_to_scalabel
    from scalabel.label.io import load

    return bdd100k_to_scalabel(load(str(path)).frames, config)


def run_official(
    task: str, gt_path: Path, pred_path: Path, config_path: Path | None
) -> dict[str, Any]:
    """The official evaluator's flattened output on one case, as `bdd100k.eval.run` calls it."""
    from bdd100k.common.utils import load_bdd100k_config

    if task in ("sem_seg_bitmask", "drivable_bitmask"):
        from bdd100k.eval.seg import evaluate_drivable, evaluate_sem_seg

        gts = sorted(str(p) for p in gt_path.glob("*.png"))
        preds = sorted(str(p) for p in pred_path.glob("*.png"))
        fn = evaluate_sem_seg if task == "sem_seg_bitmask" else evaluate_drivable
        return _flatten(dict(fn(gts, preds, nproc=1, with_logs=False)))
    assert config_path is not None
    config = load_bdd100k_config(str(config_path))
    if task == "seg_track_bitmask":
        from bdd100k.common.utils import group_and_sort_files, list_files
        from bdd100k.eval.mots import evaluate_seg_track as bitmask_seg_track

        gts, preds = (group_and_sort_files(list_files(str(p), ".png", with_prefix=True))
                      for p in (gt_path, pred_path))  # fmt: skip
        result = bitmask_seg_track(gts=gts, results=preds, config=config.scalabel, nproc=1)
        return _flatten(dict(result))
    gt = _bdd_frames(gt_path, config)
    pred = _bdd_frames(pred_path, config)
    sc = config.scalabel
    if task == "det":
        from scalabel.eval.detect import evaluate_det

        return _flatten(dict(evaluate_det(gt, pred, sc, nproc=1)))
    if task == "ins_seg":
        from scalabel.eval.ins_seg import evaluate_ins_seg

        return _flatten(dict(evaluate_ins_seg(gt, pred, sc, nproc=1)))
    if task == "pose":
        from scalabel.eval.pose import evaluate_pose

        return _flatten(dict(evaluate_pose(gt, pred, sc, nproc=1)))
    if task == "sem_seg":
        from scalabel.eval.sem_seg import evaluate_sem_seg

        return _flatten(dict(evaluate_sem_seg(gt, pred, sc, nproc=1)))
    from scalabel.label.io import group_and_sort

    if task == "box_track":
        from scalabel.eval.mot import acc_single_video_mot, evaluate_track

        result = evaluate_track(acc_single_video_mot, group_and_sort(gt), group_and_sort(pred),
                                sc, nproc=1)  # fmt: skip
    else:
        from scalabel.eval.mots import acc_single_video_mots, evaluate_seg_track

        result = evaluate_seg_track(acc_single_video_mots, group_and_sort(gt),
                                    group_and_sort(pred), sc, nproc=1)  # fmt: skip
    flat = _flatten(dict(result))
    flat.update(hota_reference(task, group_and_sort(gt), group_and_sort(pred), sc))
    return flat


# ----------------------------------------------------------------------------- HOTA (float64)
def _tracking_steps(
    task: str, gts: list[list[Any]], preds: list[list[Any]], classes: list[str]
) -> dict[str, list[list[tuple[list[int], list[int], np.ndarray]]]]:
    """Per class, per video, per frame: (gt ids, kept predicted ids, IoU matrix) after the
    official CLEAR preprocessing (unmatched predictions over crowd / ignored regions dropped)."""
    from scipy.optimize import linear_sum_assignment

    out: dict[str, list[list[Any]]] = {c: [] for c in classes}
    by_video = {frames[0].videoName: frames for frames in preds}
    for gt_frames in gts:
        pred_frames = {f.name: f for f in by_video.get(gt_frames[0].videoName, [])}
        steps: dict[str, list[Any]] = {c: [] for c in classes}
        id_map: dict[str, int] = {}
        for frame in gt_frames:
            g = _objects(task, frame, classes, id_map)
            p = _objects(task, pred_frames.get(frame.name), classes, None)
            ignore = [m for m, c, _, crowd in g if crowd]
            for c in classes:
                g_c = [(m, i) for m, cc, i, crowd in g if cc == c and not crowd]
                p_c = [(m, i) for m, cc, i, _ in p if cc == c]
                iou = _iou(task, [m for m, _ in g_c], [m for m, _ in p_c])
                keep = np.ones(len(p_c), bool)
                if ignore and p_c:
                    matched = np.zeros(len(p_c), bool)
                    if g_c:
                        cost = np.where(iou >= 0.5, 1 - iou, 1e6)
                        for r, k in zip(*linear_sum_assignment(cost), strict=True):
                            matched[k] = iou[r, k] >= 0.5
                    iof = _iof(task, [m for m, _ in p_c], ignore)
                    keep = ~(~matched & (iof > 0.5).any(axis=1))
                steps[c].append(([i for _, i in g_c], [i for (_, i), k in zip(p_c, keep, strict=True) if k],
                                 iou[:, keep]))  # fmt: skip
        for c in classes:
            if any(len(a) or len(b) for a, b, _ in steps[c]):
                out[c].append(steps[c])
    return out


def _objects(task: str, frame: Any, classes: list[str], id_map: dict[str, int] | None) -> list[Any]:
    """(geometry, class, integer id, crowd/ignored) of a frame's labels of evaluated classes."""
    out = []
    for label in (frame.labels or []) if frame is not None else []:
        if label.category not in classes:
            continue
        geometry = label.box2d if task == "box_track" else label.rle
        if geometry is None:
            continue
        attrs = label.attributes or {}
        crowd = bool(attrs.get("crowd")) or bool(attrs.get("ignored"))
        ident = int(label.id) if id_map is None else id_map.setdefault(label.id, len(id_map))
        out.append((geometry, label.category, ident, crowd))
    return out


def _boxes(boxes: list[Any]) -> np.ndarray:
    return np.array([[b.x1, b.y1, b.x2 - b.x1 + 1, b.y2 - b.y1 + 1] for b in boxes], np.float64).reshape(-1, 4)  # fmt: skip


def _iou(task: str, a: list[Any], b: list[Any]) -> np.ndarray:
    if not a or not b:
        return np.zeros((len(a), len(b)))
    if task == "box_track":
        x, y = _boxes(a)[:, None], _boxes(b)[None]
        iw = np.clip(np.minimum(x[..., 0] + x[..., 2], y[..., 0] + y[..., 2]) - np.maximum(x[..., 0], y[..., 0]), 0, None)  # fmt: skip
        ih = np.clip(np.minimum(x[..., 1] + x[..., 3], y[..., 1] + y[..., 3]) - np.maximum(x[..., 1], y[..., 1]), 0, None)  # fmt: skip
        inter = iw * ih
        return inter / (x[..., 2] * x[..., 3] + y[..., 2] * y[..., 3] - inter)
    ma, mb = _masks(a), _masks(b)
    inter = np.einsum("ihw,jhw->ij", ma, mb)
    return inter / (ma.sum((1, 2))[:, None] + mb.sum((1, 2))[None] - inter)


def _iof(task: str, preds: list[Any], regions: list[Any]) -> np.ndarray:
    if task == "box_track":
        p, r = _boxes(preds)[:, None], _boxes(regions)[None]
        iw = np.maximum(np.minimum(p[..., 0] + p[..., 2], r[..., 0] + r[..., 2]) - np.maximum(p[..., 0], r[..., 0]), 0)  # fmt: skip
        ih = np.maximum(np.minimum(p[..., 1] + p[..., 3], r[..., 1] + r[..., 3]) - np.maximum(p[..., 1], r[..., 1]), 0)  # fmt: skip
        return iw * ih / (p[..., 2] * p[..., 3])
    mp, mr = _masks(preds), _masks(regions)
    return np.einsum("ihw,jhw->ij", mp, mr) / mp.sum((1, 2))[:, None]


def _masks(rles: list[Any]) -> np.ndarray:
    from pycocotools import mask as mask_utils

    return np.stack([mask_utils.decode({"counts": r.counts.encode("ascii"), "size": r.size})
                     for r in rles]).astype(np.float64)  # fmt: skip


ALPHAS = np.arange(0.05, 0.99, 0.05)


def _hota_video(steps: list[tuple[list[int], list[int], np.ndarray]]) -> dict[str, np.ndarray]:
    """TP / FN / FP and the TP-weighted association sum per alpha for one video of one class."""
    from scipy.optimize import linear_sum_assignment

    gid = {i: k for k, i in enumerate(sorted({i for g, _, _ in steps for i in g}))}
    tid = {i: k for k, i in enumerate(sorted({i for _, p, _ in steps for i in p}))}
    pot = np.zeros((len(gid), len(tid)))
    g_count, t_count = np.zeros(len(gid)), np.zeros(len(tid))
    for g, p, sim in steps:  # global alignment from soft IoU-normalised similarity
        gi, ti = [gid[i] for i in g], [tid[i] for i in p]
        if gi and ti:
            denom = sim.sum(1, keepdims=True) + sim.sum(0, keepdims=True) - sim
            soft = np.divide(sim, denom, out=np.zeros_like(sim), where=denom > np.finfo(float).eps)
            pot[np.ix_(gi, ti)] += soft
        g_count[gi] += 1
        t_count[ti] += 1
    align = pot / (g_count[:, None] + t_count[None] - pot) if pot.size else pot
    tp = np.zeros(len(ALPHAS))
    hits = np.zeros((len(ALPHAS), len(gid), len(tid)))
    n_gt = sum(len(g) for g, _, _ in steps)
    n_tr = sum(len(p) for _, p, _ in steps)
    for g, p, sim in steps:
        if not g or not p:
            continue
        gi, ti = [gid[i] for i in g], [tid[i] for i in p]
        score = align[np.ix_(gi, ti)] * sim
        rows, cols = linear_sum_assignment(-score)
        for a, alpha in enumerate(ALPHAS):
            ok = sim[rows, cols] >= alpha - np.finfo(float).eps
            tp[a] += ok.sum()
            for r, c in zip(rows[ok], cols[ok], strict=True):
                hits[a, gi[r], ti[c]] += 1
    ass = np.zeros(len(ALPHAS))
    for a in range(len(ALPHAS)):
        h = hits[a]
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = h / np.maximum(1, g_count[:, None] + t_count[None] - h)
        ass[a] = (h * ratio).sum()
    return {"TP": tp, "FN": n_gt - tp, "FP": n_tr - tp, "ASS": ass}


def _scores(
    tp: np.ndarray, fn: np.ndarray, fp: np.ndarray, ass_sum: np.ndarray
) -> dict[str, np.ndarray]:
    det = tp / np.maximum(1, tp + fn + fp)
    ass = ass_sum / np.maximum(1, tp)
    return {"HOTA": np.sqrt(det * ass), "DetA": det, "AssA": ass}


def hota_reference(
    task: str, gts: list[list[Any]], preds: list[list[Any]], config: Any
) -> dict[str, float]:
    """HOTA / DetA / AssA pooled over classes (detection-averaged) and class-averaged (mHOTA ...),
    mean over the 19 alpha thresholds, in percent; classes without data are left out."""
    from scalabel.label.utils import get_leaf_categories

    classes = [c.name for c in get_leaf_categories(config.categories)]
    per_class = {}
    for c, videos in _tracking_steps(task, gts, preds, classes).items():
        if not videos:
            continue
        parts = [_hota_video(v) for v in videos]
        per_class[c] = {k: sum(p[k] for p in parts) for k in ("TP", "FN", "FP", "ASS")}
    if not per_class:
        return {"HOTA": None, "DetA": None, "AssA": None}
    total = {k: sum(v[k] for v in per_class.values()) for k in ("TP", "FN", "FP", "ASS")}
    pooled = _scores(total["TP"], total["FN"], total["FP"], total["ASS"])
    each = [_scores(v["TP"], v["FN"], v["FP"], v["ASS"]) for v in per_class.values()]
    out = {}
    for key in ("HOTA", "DetA", "AssA"):
        out[key] = float(pooled[key].mean()) * 100
        out["m" + key] = float(np.mean([e[key] for e in each], axis=0).mean()) * 100
    return out


# ----------------------------------------------------------------------------- main
CASES: dict[str, tuple[str, str]] = {
    # case -> (official task, drivemtl eval-files task)
    "det": ("det", "det"),
    "ins_seg": ("ins_seg", "ins_seg"),
    "pose": ("pose", "pose"),
    "sem_seg_rle": ("sem_seg", "sem_seg"),
    "sem_seg_bitmask": ("sem_seg_bitmask", "sem_seg"),
    "drivable_bitmask": ("drivable_bitmask", "drivable"),
    "box_track": ("box_track", "box_track"),
    "seg_track": ("seg_track", "seg_track"),
    "seg_track_bitmask": ("seg_track_bitmask", "seg_track"),
}
# real-format fixtures, read in place (../shared/fixtures/bdd100k): case -> (official task,
# eval-files task, ground truth, predictions, config or None)
FIXTURE_CASES: dict[str, tuple[str, str, str, str, str | None]] = {
    "det": ("det", "det", "box_track/track_sample_anns.json", "det/bbox_predictions.json",
            "configs/det.toml"),
    "pose": ("pose", "pose", "pose/pose_sample.json", "pose/pose_preds.json", "configs/pose.toml"),
    "sem_seg": ("sem_seg", "sem_seg", "sem_seg/sem_seg_sample.json", "sem_seg/sem_seg_preds.json",
                "configs/sem_seg.toml"),
    "sem_seg_bitmask": ("sem_seg_bitmask", "sem_seg", "seg/gt", "seg/pred", None),
    "box_track": ("box_track", "box_track", "box_track/track_sample_anns.json",
                  "box_track/track_predictions.json", "configs/box_track.toml"),
}  # fmt: skip


def main() -> None:
    """Generate every case's inputs, run the official evaluators, write refs/official.json."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fixtures", type=Path, default=ROOT.parent / "shared/fixtures")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    logging.disable(logging.CRITICAL)
    fixtures = args.fixtures / "bdd100k"
    rng = np.random.default_rng(15)
    makers = {
        "det": lambda o: make_det(fixtures, o, rng),
        "ins_seg": lambda o: make_ins_seg(fixtures, o, rng),
        "pose": lambda o: make_pose(fixtures, o, rng),
        "sem_seg_rle": lambda o: make_sem_seg_rle(fixtures, o, rng),
        "sem_seg_bitmask": lambda o: make_bitmasks(o, rng, 19, 255),
        "drivable_bitmask": lambda o: make_bitmasks(o, rng, 3, 2),
        "box_track": lambda o: make_box_track(fixtures, o, rng),
        "seg_track": lambda o: make_seg_track(fixtures, o, rng),
        "seg_track_bitmask": lambda o: make_seg_track_bitmask(o, o.parent / "seg_track"),
    }
    references = {}
    for case, (official_task, task) in CASES.items():
        folder = args.out / case
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        makers[case](folder)
        gt, pred = ("gt.json", "pred.json") if (folder / "gt.json").exists() else ("gt", "pred")
        config = folder / "config.toml"
        metrics = run_official(official_task, folder / gt, folder / pred,
                               config if config.exists() else None)  # fmt: skip
        references[case] = {"task": task, "gt": gt, "pred": pred,
                            "config": "config.toml" if config.exists() else None,
                            "metrics": metrics}  # fmt: skip
        print(f"{case}: {len(metrics)} official keys")
    _write_json(args.out / "official.json", references)
    on_fixtures = {}
    for case, (official_task, task, gt, pred, config) in FIXTURE_CASES.items():
        metrics = run_official(official_task, fixtures / gt, fixtures / pred,
                               fixtures / config if config else None)  # fmt: skip
        on_fixtures[case] = {"task": task, "gt": gt, "pred": pred, "config": config,
                             "metrics": metrics}  # fmt: skip
        print(f"fixture {case}: {len(metrics)} official keys")
    _write_json(args.out / "official_fixtures.json", on_fixtures)


if __name__ == "__main__":
    main()
