"""Official BDD100K lane-marking numbers for Scalabel JSON (poly2d) lanes: reference data.

Opt-in, outside `make test`: it needs the official toolkit (`bdd100k` 1.0.1 on `scalabel` 0.3.1,
numpy < 2 / pydantic < 2), so it runs with that environment's interpreter and never imports
drivemtl:

    /tmp/bdd-official/bin/python benchmarks/official_lane_json.py            # regenerate refs
    /tmp/bdd-official/bin/python benchmarks/official_lane_json.py --gt G --pred P \\
        [--config C] [--out scores.json] [--masks DIR]                         # any inputs

The official route from poly2d lanes to scores is `bdd100k.label.to_mask` (lane_mark mode:
matplotlib strokes into one-byte PNGs) followed by the bitmask evaluation
(`bdd100k.eval.lane.evaluate_lane_marking`); `bdd100k.eval.run -t lane_mark` on JSON instead
calls scalabel's `evaluate_boundary`, which reads only `rle` labels and scores poly2d lanes as
empty. A side given as a folder of PNGs is used as it is. to_mask calls
`FigureCanvasAgg.tostring_rgb`, removed in matplotlib 3.10; the shim below returns the same RGB
bytes from `buffer_rgba()`.

Without --gt it writes seeded inputs under tests/evaluation/data/lane_json: a ground truth of
perspective lanes (straight, Bezier 'C' runs, vertices off the image, crosswalks, a non-lane
label, a frame without labels) and predictions derived from it (exact, shifted by 1-3 px,
dropped / extra lines, swapped attributes, a missing frame), the official scores of each in
official.json (flattened: `F1_pix{r}`, `F1_pix{r}/{ATTRIBUTE}`, `F1_pix{r}/{value}`), and the
official masks of the ground truth and the shifted prediction (masks/) for the pixel test.
With --dense (also part of a full regeneration) it writes dense_gt.json, lanes of 127-400
line vertices (matplotlib simplifies paths of 128 or more), and their official masks
(masks/dense_gt) for the simplification test in test_lane_raster.py.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "tests/evaluation/data/lane_json"
CATEGORIES = (
    "crosswalk", "double other", "double white", "double yellow", "road curb", "single other",
    "single white", "single yellow",
)  # fmt: skip
SMALL = (360, 640)  # (height, width) of the small-canvas cases


def _shim_matplotlib() -> None:
    """Give FigureCanvasAgg back the `tostring_rgb` to_mask calls (gone in matplotlib 3.10)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    if not hasattr(FigureCanvasAgg, "tostring_rgb"):
        FigureCanvasAgg.tostring_rgb = lambda self: np.asarray(self.buffer_rgba())[
            ..., :3
        ].tobytes()


def official_masks(labels: Path, out: Path, config: Path | None) -> Path:
    """Run the official to_mask (lane_mark) on a JSON file / folder; returns the PNG folder."""
    _shim_matplotlib()
    from bdd100k.common.utils import load_bdd100k_config
    from bdd100k.label.to_mask import lanemark_to_masks
    from scalabel.label.io import load

    cfg = load_bdd100k_config(str(config) if config else "lane_mark")
    lanemark_to_masks(load(str(labels), 1).frames, str(out), cfg.scalabel, 1)
    return out


def official_scores(gt: Path, pred: Path, config: Path | None, masks: Path) -> dict[str, float]:
    """Official lane F-scores of two inputs (JSON drawn by to_mask, or PNG folders)."""
    from bdd100k.common.utils import list_files
    from bdd100k.eval.lane import evaluate_lane_marking

    folders = []
    for side, path in (("gt", gt), ("pred", pred)):
        folders.append(official_masks(path, masks / side, config) if path.is_file() else path)
    gt_paths = list_files(str(folders[0]), ".png", with_prefix=True)
    pred_paths = list_files(str(folders[1]), ".png", with_prefix=True)
    result = evaluate_lane_marking(gt_paths, pred_paths, nproc=1, with_logs=False)
    return _flatten(dict(result))


def _flatten(result: dict[str, Any]) -> dict[str, float]:
    """{metric: [per-value rows..., attribute row, {AVERAGE}]} -> flat DriveMTL keys."""
    flat: dict[str, float] = {}
    for metric, rows in result.items():
        for row in rows:
            for name, value in row.items():
                flat[metric if name == "AVERAGE" else f"{metric}/{name}"] = float(value)
    return flat


# ----------------------------------------------------------------------------- generated inputs
def _lane(rng: np.random.Generator, k: int, size: tuple[int, int]) -> dict[str, Any]:
    """One lane label: a perspective line / curve towards a vanishing point, random attributes."""
    h, w = size
    vanish = np.array([w * rng.uniform(0.4, 0.6), h * rng.uniform(0.35, 0.5)])
    kind = rng.choice(["line", "curve", "crosswalk", "off"])
    if kind == "crosswalk":
        y = rng.uniform(0.6, 0.95) * h
        vertices = [
            [rng.uniform(-0.1, 0.3) * w, y],
            [rng.uniform(0.6, 1.1) * w, y + rng.normal(0, 3)],
        ]
        types, category, direction = "LL", "crosswalk", "vertical"
    else:
        bottom = np.array([rng.uniform(-0.3, 1.3) * w, h * rng.uniform(0.9, 1.15)])
        t = np.sort(rng.uniform(0.05, 0.9, 3))[::-1]
        points = [bottom + (vanish - bottom) * s for s in (0.0, *t)]
        if kind == "curve":
            bend = rng.normal(0, 0.08 * w)
            points[1] = points[1] + [bend, 0]
            points[2] = points[2] + [bend * 0.7, 0]
            types = "LCCC"
        else:
            types = "LLLL"
        if kind == "off":
            points[0] = points[0] + [rng.choice([-1, 1]) * 0.4 * w, 0.2 * h]
        vertices = [[float(x), float(y)] for x, y in points]
        category = str(rng.choice(CATEGORIES[1:]))
        direction = "parallel"
    return {
        "id": f"lane-{k}",
        "category": category,
        "attributes": {
            "laneDirection": direction,
            "laneStyle": str(rng.choice(["solid", "dashed"])),
            "laneCategory": category,
        },
        "poly2d": [{"vertices": vertices, "types": types, "closed": False}],
    }


def make_ground_truth(rng: np.random.Generator, frames: int, size: tuple[int, int]) -> list[dict]:
    """Frames of 3-7 lanes each, plus a non-lane label, a legacy 'lane/...' name, an empty frame."""
    out = []
    for f in range(frames):
        labels = [_lane(rng, k, size) for k in range(int(rng.integers(3, 8)))]
        if f == 0:
            labels.append(
                {"id": "car-0", "category": "car", "box2d": {"x1": 5, "y1": 6, "x2": 40, "y2": 30}}
            )
            legacy = copy.deepcopy(labels[0])
            legacy["id"], legacy["category"] = "legacy", "lane/single white"
            labels.append(legacy)
        out.append({"name": f"lane-{f:02d}.jpg", "labels": labels if f != frames - 1 else None})
    return out


def _perturb(rng: np.random.Generator, gt: list[dict], mode: str) -> list[dict]:
    """A prediction file derived from the ground truth."""
    pred = copy.deepcopy(gt)
    for frame in pred:
        labels = frame["labels"] or []
        kept = []
        for label in labels:
            if label.get("poly2d") is None:
                continue
            if mode == "shifted":
                shift = rng.uniform(-3, 3, 2)
                for poly in label["poly2d"]:
                    poly["vertices"] = [[x + shift[0], y + shift[1]] for x, y in poly["vertices"]]
            elif mode == "dropped_extra" and rng.random() < 0.3:
                continue
            elif mode == "attributes" and rng.random() < 0.5:
                attrs = label["attributes"]
                attrs["laneStyle"] = "dashed" if attrs["laneStyle"] == "solid" else "solid"
                if rng.random() < 0.5:
                    attrs["laneDirection"] = "vertical"
                label["category"] = str(rng.choice(CATEGORIES))
            label["score"] = float(rng.uniform(0.3, 1.0))
            kept.append(label)
        if mode == "dropped_extra":
            size = (720, 1280) if not frame["name"].startswith("small") else SMALL
            kept += [_lane(rng, 100 + k, size) for k in range(int(rng.integers(0, 3)))]
        frame["labels"] = kept
    if mode == "dropped_extra":
        pred = pred[1:]  # a ground-truth frame without a prediction
    return pred


def regenerate() -> None:
    """Write the generated inputs and the official numbers under tests/evaluation/data/lane_json."""
    rng = np.random.default_rng(15)
    OUT.mkdir(parents=True, exist_ok=True)
    config = OUT / "config_small.toml"
    config.write_text(
        f"[scalabel.imageSize]\nheight = {SMALL[0]}\nwidth = {SMALL[1]}\n"
        + "".join(f'[[scalabel.categories]]\nname = "{c}"\n' for c in CATEGORIES),
        encoding="utf-8",
    )
    cases = {"default": (None, (720, 1280), 3), "small": (config, SMALL, 6)}
    official: dict[str, dict[str, float]] = {}
    for case, (cfg, size, frames) in cases.items():
        gt = make_ground_truth(rng, frames, size)
        for frame in gt:
            frame["name"] = f"{case}-{frame['name']}"
        _write(OUT / f"{case}_gt.json", gt)
        for mode in ("exact", "shifted", "dropped_extra", "attributes"):
            pred_path = OUT / f"{case}_pred_{mode}.json"
            _write(pred_path, gt if mode == "exact" else _perturb(rng, gt, mode))
            with tempfile.TemporaryDirectory() as tmp:
                scores = official_scores(OUT / f"{case}_gt.json", pred_path, cfg, Path(tmp))
                official[f"{case}/{mode}"] = scores
                if mode == "shifted":  # keep the official masks for the pixel test
                    for side in ("gt", "pred"):
                        target = OUT / "masks" / f"{case}_{side}"
                        shutil.rmtree(target, ignore_errors=True)
                        shutil.copytree(Path(tmp) / side, target)
    _write(OUT / "official.json", official)
    regenerate_dense()


def _dense_lane(rng: np.random.Generator, k: int, size: tuple[int, int]) -> dict[str, Any]:
    """A lane of many vertices about 12 px apart (runs of them get merged when simplified).

    Kinds: a gentle wave, the same with jitter, a line that steps back every other vertex
    (anti-parallel runs), a wave leaving the canvas and coming back; 127 to 400 vertices.
    """
    h, w = size
    n = int(rng.choice([127, 128, 150, 200, 400]))
    kind = k % 4
    step = 12.0 if kind != 2 else 6.0
    angle = rng.uniform(-0.5, 0.5) + (np.pi / 2 if rng.random() < 0.3 else 0.0)
    s = np.arange(n) * step * rng.uniform(0.8, 1.2)
    if kind == 2:
        s = s + np.where(np.arange(n) % 2, 10.0, 0.0)  # every other vertex steps back
    bend = rng.uniform(20, 80) * np.sin(s / rng.uniform(150, 400))
    if kind == 1:
        bend = bend + rng.normal(0, 0.4, n)
    start = np.array([rng.uniform(0, w), rng.uniform(0, h)]) - 0.4 * s[-1] * np.array(
        [np.cos(angle), np.sin(angle)]
    )
    if kind == 3:
        start = start + np.array([rng.choice([-1, 1]) * 0.3 * w, 0.0])
    x = start[0] + s * np.cos(angle) - bend * np.sin(angle)
    y = start[1] + s * np.sin(angle) + bend * np.cos(angle)
    types = "L" * n if rng.random() < 0.8 else "C" + "L" * (n - 1)  # a first 'C' is a MOVETO
    return {
        "id": f"dense-{k}",
        "category": str(rng.choice(CATEGORIES[1:])),
        "attributes": {"laneDirection": "parallel", "laneStyle": "solid"},
        "poly2d": [{"vertices": np.c_[x, y].round(2).tolist(), "types": types, "closed": False}],
    }


def regenerate_dense() -> None:
    """Write dense_gt.json (line-only lanes of >= 128 vertices) and its official masks."""
    rng = np.random.default_rng(128)
    frames = [
        {
            "name": f"dense-{f:02d}.jpg",
            "labels": [_dense_lane(rng, 4 * f + k, (720, 1280)) for k in range(4)],
        }
        for f in range(4)
    ]
    _write(OUT / "dense_gt.json", frames, indent=None)  # long vertex lists: one line
    target = OUT / "masks" / "dense_gt"
    shutil.rmtree(target, ignore_errors=True)
    official_masks(OUT / "dense_gt.json", target, None)


def _write(path: Path, data: Any, indent: int | None = 1) -> None:
    path.write_text(json.dumps(data, indent=indent) + "\n", encoding="utf-8")


def main() -> None:
    """Regenerate the reference data, or score the given inputs."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--gt", type=Path)
    parser.add_argument("--pred", type=Path)
    parser.add_argument("--config", type=Path)
    parser.add_argument("--out", type=Path, help="write the flat scores here (JSON)")
    parser.add_argument("--masks", type=Path, help="keep the official masks here")
    parser.add_argument("--dense", action="store_true", help="regenerate only the dense lanes")
    args = parser.parse_args()
    logging.disable(logging.INFO)
    if args.dense:
        regenerate_dense()
        print(f"wrote {OUT / 'dense_gt.json'}")
        return
    if args.gt is None:
        regenerate()
        print(f"wrote {OUT}")
        return
    if args.masks is not None:
        scores = official_scores(args.gt, args.pred, args.config, args.masks)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            scores = official_scores(args.gt, args.pred, args.config, Path(tmp))
    text = json.dumps(scores, indent=1)
    print(text)
    if args.out is not None:
        args.out.write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
