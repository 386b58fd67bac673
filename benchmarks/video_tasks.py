"""The video tasks (MOT, MOTS, optical flow) after a short CPU training run, against their
trivial baselines, on the synthetic world's tracking clips.

Synthesises preset `tracking` (8-frame clips with boxes + track ids, MOTS masks and the exact
forward flow) for a train and a val split (different world seeds), trains one tiny network
(ResNet-18 width 16 + FPN 32) with detection + instance + mot + mots + flow on the train clips
(key + one reference frame within +-`--window`; flow without its labels), and scores on the
val clips, frame by frame in video order with the tracker memory carried along:

- MOT / MOTS: (a) the trained tracker, (b) a new id for every detection in every frame (ids
  never reused), on the same detections / masks that the tracker outputs as tracks, so the two
  differ only in their identities;
- flow (key -> next frame, against the true flow): (a) the trained decoder, (b) zero flow.

Mean ± stdev over `--seeds` (training seeds; the data stay the same), a Markdown table on
stdout and `results.json` in `--out`.

    python benchmarks/video_tasks.py --out runs/video_tasks --steps 600 --seeds 0 1
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import statistics
import time
from pathlib import Path

import torch
from set_heads import FASTER_RCNN  # the CPU-sized Faster R-CNN of the set-head benchmark

from drivemtl.config.loader import validate_tree
from drivemtl.data.synthetic import generate_dataset
from drivemtl.engine.run_config import RunConfig
from drivemtl.inference.demo_video import new_id_per_detection

TASKS = ["detection", "instance", "mot", "mots", "flow"]
# CPU-sized QDTrack embedding head and PWC decoder (the reference widths are 256 / 1024 / 256
# and 128..32); the backward flow's own census loss is off (it halves the cost of the census,
# most of a training step; the backward flow is still predicted for the range-map occlusion).
# Every other option, the tracker's thresholds included, at its default.
MOT_HEAD = {"channels": 32, "num_convs": 2, "norm_groups": 8, "fc_dim": 128, "embed_dim": 64,
            "rois_per_image": 64}  # fmt: skip
FLOW_HEAD = {"strides": [32, 16, 8, 4], "decoder_widths": [32, 32, 24, 16],
             "context_widths": [32, 32, 32, 16], "context_dilations": [1, 2, 4, 1],
             "bidirectional": False}  # fmt: skip
# (task, metric, higher is better) rows of the table.
ROWS = [("mot", "HOTA", True), ("mot", "IDF1", True), ("mot", "MOTA", True),
        ("mot", "AssA", True), ("mot", "DetA", True), ("mots", "HOTA", True),
        ("mots", "AssA", True), ("mots", "IDF1", True), ("flow", "EPE", False),
        ("flow", "Fl-all", False), ("detection", "AP", True), ("instance", "AP", True)]  # fmt: skip


def run_config(
    data: Path, steps: int, seed: int, height: int, lr: float, window: int, clip: str = "window",
    tasks: list[str] = TASKS, flow_options: dict | None = None,
) -> RunConfig:  # fmt: skip
    """The tiny network of `tasks` (default all five) on the tracking clips (`clip`: how
    references are drawn; `flow_options` override the flow head's)."""
    clip_cfg = {"length": 2, "sampling": clip, "window": window}
    heads = {"detection": {"head": FASTER_RCNN}, "instance": {"head": {"channels": 32, "num_convs": 2}},
             "mot": {"head": MOT_HEAD}, "mots": {},
             "flow": {"head": {**FLOW_HEAD, **(flow_options or {})}}}  # fmt: skip
    tree = {
        "name": "video_tasks",
        "seed": seed,
        "model": {
            "backbone": {"type": "resnet18", "width": 16, "norm": "bn"},
            "neck": {"type": "fpn", "out_channels": 32, "norm": "gn"},
            "tasks": {task: heads[task] for task in tasks},
        },
        "data": {
            "sets": {"tracking": {"root": str(data / "{split}" / "tracking"), "tasks": list(tasks),
                                  "clip": clip_cfg}},
            "transforms": {"heights": [height], "test_height": height, "flip": 0.5},
        },
        "recipe": {"stages": [{
            "name": "joint", "steps": steps, "batch_size": 4,
            "optimizer": {"type": "adamw", "lr": lr, "weight_decay": 1e-4},
            "schedule": {"type": "cosine", "warmup_steps": steps // 10},
            "grad_clip": 10.0,
        }]},
        "train": {"accelerator": "cpu", "checkpoint_every_n_steps": 10**6, "log_every_n_steps": 10},
    }  # fmt: skip
    return validate_tree(tree, {}, RunConfig, "<video_tasks>")


def evaluate(
    config: RunConfig, weights: Path, tasks: list[str] = TASKS
) -> tuple[dict[str, dict], dict[str, dict]]:
    """(model metrics, baseline metrics) per task on the val clips, frames in video order with
    the tracker memory carried from batch to batch (as `drivemtl eval` does)."""
    from drivemtl.data import build_dataset
    from drivemtl.evaluation.runner import build_evaluators
    from drivemtl.inference.predictor import load_model
    from drivemtl.structures.batch import collate

    model = load_model(config, weights)
    classes = {t: p.classes for t, p in model.tasks.items()
               if isinstance(getattr(p, "classes", None), tuple)}  # fmt: skip
    evals = build_evaluators(tasks, classes)
    base = build_evaluators(tasks, classes)
    dataset = build_dataset(config.data, "val")  # type: ignore[arg-type]
    state, counter = None, [0]
    with torch.no_grad():
        for start in range(0, len(dataset), 4):
            samples = [dataset[i] for i in range(start, min(len(dataset), start + 4))]
            batch = collate(samples, config.data.size_divisor)  # type: ignore[union-attr]
            predictions, state = model.predict_with_state(batch, state, tasks)
            baseline = new_id_per_detection(predictions, counter)
            for task in tasks:
                evals[task].update(predictions, batch)  # type: ignore[attr-defined]
                base[task].update(baseline, batch)  # type: ignore[attr-defined]
    return (
        {t: e.compute() for t, e in evals.items()},  # type: ignore[attr-defined]
        {t: e.compute() for t, e in base.items()},  # type: ignore[attr-defined]
    )


def train_and_eval(
    cfg: RunConfig, eval_cfg: RunConfig, out: Path, tasks: list[str] = TASKS
) -> dict[str, float]:
    """Train `cfg` into `out` (replacing an earlier run there); model and baseline scores of
    `tasks`' rows."""
    from drivemtl.engine.trainer import run_recipe

    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    run = run_recipe(cfg, out, progress=False)
    train_s = time.perf_counter() - start
    model, base = evaluate(eval_cfg, run.final_weights, tasks)
    scores = {"train_s": train_s, "eval_s": time.perf_counter() - start - train_s}
    for task, metric, _ in (row for row in ROWS if row[0] in tasks):
        scores[f"{task}/{metric}"] = float(model[task].get(metric, math.nan))
        scores[f"baseline {task}/{metric}"] = float(base[task].get(metric, math.nan))
    return scores


def _cell(values: list[float]) -> str:
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.2f} ± {spread:.2f}"


def table(runs: list[dict[str, float]], tasks: list[str] = TASKS) -> str:
    """Markdown rows of `tasks`: metric, trained, baseline (mean ± stdev over the runs)."""
    lines = ["| task | metric | trained | baseline | baseline is |", "|---|---|---|---|---|"]
    what = {"mot": "a new id per detection per frame", "mots": "a new id per mask per frame",
            "flow": "zero flow", "detection": "-", "instance": "-"}  # fmt: skip
    for task, metric, higher in (row for row in ROWS if row[0] in tasks):
        key = f"{task}/{metric}"
        arrow = "↑" if higher else "↓"
        model = _cell([r[key] for r in runs])
        baseline = _cell([r[f"baseline {key}"] for r in runs]) if task in ("mot", "mots", "flow") else "-"  # fmt: skip
        lines.append(f"| {task} | {metric} {arrow} | {model} | {baseline} | {what[task]} |")
    return "\n".join(lines)


def synthesise(data: Path, frames: int, val_frames: int, size: tuple[int, int]) -> float:
    """Write the train / val clips (world seeds 31 / 32) unless present; seconds taken."""
    start = time.perf_counter()
    for split, count, seed in (("train", frames, 31), ("val", val_frames, 32)):
        if not (data / split / "dataset.yaml").is_file():
            generate_dataset(data / split, "tracking", count, size, seed, progress=False)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/video_tasks"))
    parser.add_argument("--frames", type=int, default=240, help="training frames (8-frame clips)")
    parser.add_argument("--val-frames", type=int, default=64)
    parser.add_argument("--size", default="256x144", help="WxH of the synthetic world")
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--window", type=int, default=3, help="reference within +-window")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--tasks", nargs="+", default=TASKS, choices=TASKS,
                        help="train and score only these (e.g. `--tasks flow`)")  # fmt: skip
    parser.add_argument("--flow-options", type=json.loads, default={},
                        help='JSON overrides of the flow head, e.g. \'{"level_weights": [0, 0, 1, 1]}\'')  # fmt: skip
    args = parser.parse_args()
    w, h = (int(v) for v in args.size.split("x"))
    data = args.out / "data"
    synth_s = synthesise(data, args.frames, args.val_frames, (w, h))
    runs = []
    for seed in args.seeds:
        cfg = run_config(data, args.steps, seed, h, args.lr, args.window, tasks=args.tasks,
                         flow_options=args.flow_options)  # fmt: skip
        # Flow is scored key -> next frame: the same model read with next-frame references.
        eval_cfg = run_config(data, args.steps, seed, h, args.lr, args.window, clip="next",
                              tasks=args.tasks, flow_options=args.flow_options)  # fmt: skip
        scores = train_and_eval(cfg, eval_cfg, args.out / f"s{seed}", args.tasks)
        runs.append(scores)
        print(f"seed {seed}: {json.dumps(scores)}", flush=True)
    print(f"{args.frames} training / {args.val_frames} val frames at {args.size}, {args.steps} "
          f"steps of batch 4, {torch.get_num_threads()} threads; synthesis {synth_s:.0f} s, "
          f"training {statistics.fmean(r['train_s'] for r in runs):.0f} s and evaluation "
          f"{statistics.fmean(r['eval_s'] for r in runs):.0f} s per seed")  # fmt: skip
    print(table(runs, args.tasks))
    record = {"args": {k: str(v) for k, v in vars(args).items()}, "synth_s": synth_s,
              "runs": runs}  # fmt: skip
    (args.out / "results.json").write_text(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
