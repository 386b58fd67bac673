"""DenseMTL's comparison on the synthetic world: STL vs MTL vs PAD-Net vs 3-ways PAD-Net vs mTEB.

Synthesises the `dense` preset (semantic, depth, normals, edges) at a CPU-affordable size, trains
every variant with the same recipe and seed, evaluates it on held-out frames and prints each
task's headline metric and Δ_SD / Δ_SDN / Δ_SDNE against the single-task models (DenseMTL's
Δ_T: mean signed relative change over the tasks of the set), averaged over seeds with the spread.
The paper's direction (Cityscapes / Synthia / VKITTI2, ResNet-101): STL < MTL < PAD-Net < xTAM
in Δ_SDN. Every variant uses the same tiny encoder and per-pixel decoders; only the exchange
module differs (`model.exchanges`).

    python benchmarks/densemtl_comparison.py --out runs/densemtl_cmp --steps 300 --seeds 0 1
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import time
from pathlib import Path
from typing import Any

from drivemtl.config.loader import validate_tree
from drivemtl.data.synthetic import generate_dataset
from drivemtl.engine.run_config import RunConfig
from drivemtl.engine.trainer import run_recipe
from drivemtl.evaluation.delta import delta_t
from drivemtl.evaluation.model_eval import evaluate_model

TASKS = ("semantic", "depth", "normals", "edges")
HEADLINE = {"semantic": "mIoU", "depth": "AbsRel", "normals": "mean", "edges": "F1"}
TASK_SETS = {"SD": ("semantic", "depth"), "SDN": TASKS[:3], "SDNE": TASKS}
# DenseMTL's SDNE weights (REFERENCE-NUMBERS.md): CE x100 semantic, berHu x1, normals x100, edges x50
WEIGHTS = {"semantic": 100.0, "depth": 1.0, "normals": 100.0, "edges": 50.0}
VARIANTS: dict[str, list[dict[str, Any]]] = {
    "MTL": [],
    "PAD-Net": [{"type": "padnet", "tasks": list(TASKS), "channels": 32}],
    "3-ways PAD-Net": [{"type": "padnet3", "tasks": list(TASKS), "channels": 32}],
    "mTEB (xTAM)": [{"type": "mteb", "tasks": list(TASKS), "channels": 32, "downscale": 4}],
}


def config(data: Path, tasks: tuple[str, ...], exchanges: list, steps: int, seed: int) -> RunConfig:
    """A tiny DenseMTL-style run: resnet18 w16, FPN 32, per-pixel decoders, SDNE weights."""
    tree = {
        "name": "cmp",
        "seed": seed,
        "model": {
            "backbone": {"type": "resnet18", "width": 16, "norm": "bn"},
            "neck": {"type": "fpn", "out_channels": 32, "norm": "gn"},
            "tasks": {t: {"head": {"channels": 32}} for t in tasks},
            "exchanges": exchanges,
        },
        "data": {
            "sets": {"dense": {"root": str(data / "{split}" / "dense"), "tasks": list(tasks)}},
            "transforms": {"heights": [96], "flip": 0.5},
        },
        "recipe": {
            "stages": [
                {
                    "name": "joint",
                    "steps": steps,
                    "batch_size": 4,
                    "sampler": "none",
                    "optimizer": {"lr": 2e-3, "weight_decay": 0.0, "lr_scale": {"backbone.*": 0.5}},
                    "schedule": {"type": "cosine", "warmup_steps": steps // 10},
                    "loss_weighting": {"type": "fixed", "weights": {t: WEIGHTS[t] for t in tasks}},
                    "grad_clip": 10.0,
                }
            ]
        },
        "train": {"accelerator": "cpu", "checkpoint_every_n_steps": 10**6, "log_every_n_steps": 5},
    }
    return validate_tree(tree, {}, RunConfig, "<densemtl_comparison>")


def headline(metrics: dict[str, dict[str, float]], tasks: tuple[str, ...]) -> dict[str, float]:
    """`task/metric` -> value of each task's headline metric."""
    return {f"{t}/{HEADLINE[t]}": float(metrics[t][HEADLINE[t]]) for t in tasks}


def train_and_eval(cfg: RunConfig, out: Path, tasks: tuple[str, ...]) -> dict[str, float]:
    """Train `cfg` into `out` (replacing an earlier run there) and score it on the val split."""
    shutil.rmtree(out, ignore_errors=True)
    run = run_recipe(cfg, out, progress=False)
    result = evaluate_model(cfg, run.final_weights, progress=False, resources=False)
    return headline(result.metrics, tasks)


def main() -> None:
    """Synthesise, train every variant per seed, print the table and write results.json."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/densemtl_cmp"))
    parser.add_argument("--frames", type=int, default=160, help="training frames")
    parser.add_argument("--val-frames", type=int, default=40)
    parser.add_argument("--size", default="160x96", help="WxH of the synthetic world")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS))
    args = parser.parse_args()
    w, h = (int(v) for v in args.size.split("x"))
    data = args.out / "data"
    for split, frames, seed in (("train", args.frames, 11), ("val", args.val_frames, 12)):
        if not (data / split / "dataset.yaml").is_file():
            generate_dataset(data / split, "dense", frames, (w, h), seed, progress=False)
    results: dict[str, list[dict[str, float]]] = {"STL": []}
    times: dict[str, float] = {}
    for seed in args.seeds:
        start = time.perf_counter()
        single: dict[str, float] = {}
        for task in TASKS:
            cfg = config(data, (task,), [], args.steps, seed)
            single.update(train_and_eval(cfg, args.out / f"stl-{task}-s{seed}", (task,)))
        results["STL"].append(single)
        times["STL"] = times.get("STL", 0.0) + time.perf_counter() - start
        for name in args.variants:
            start = time.perf_counter()
            cfg = config(data, TASKS, VARIANTS[name], args.steps, seed)
            slug = name.split()[0].lower().replace("-", "")
            scores = train_and_eval(cfg, args.out / f"{slug}-s{seed}", TASKS)
            results.setdefault(name, []).append(scores)
            times[name] = times.get(name, 0.0) + time.perf_counter() - start
    table = summarise(results)
    print(format_table(table, times, len(args.seeds)))
    (args.out / "results.json").write_text(json.dumps({"runs": results, "table": table}, indent=2))


def summarise(results: dict[str, list[dict[str, float]]]) -> dict[str, dict[str, list[float]]]:
    """Per variant: each metric and each Δ over seeds, as [mean, stdev]."""
    table: dict[str, dict[str, list[float]]] = {}
    for name, runs in results.items():
        rows: dict[str, list[float]] = {}
        for key in runs[0]:
            rows[key] = [r[key] for r in runs]
        for label, subset in TASK_SETS.items():
            rows[f"Δ_{label}"] = [
                delta_t(
                    {f"{t}/{HEADLINE[t]}": run[f"{t}/{HEADLINE[t]}"] for t in subset},
                    {f"{t}/{HEADLINE[t]}": stl[f"{t}/{HEADLINE[t]}"] for t in subset},
                )
                for run, stl in zip(runs, results["STL"], strict=True)
            ]
        table[name] = {
            k: [statistics.fmean(v), statistics.stdev(v) if len(v) > 1 else 0.0]
            for k, v in rows.items()
        }
    return table


def format_table(
    table: dict[str, dict[str, list[float]]], times: dict[str, float], seeds: int
) -> str:
    """Markdown table: variants as rows, metrics and Δs as columns, mean ± spread over seeds."""
    keys = list(next(iter(table.values())))
    lines = [
        "| variant | " + " | ".join(keys) + " | time (s) |",
        "|---|" + "---|" * (len(keys) + 1),
    ]
    for name, row in table.items():
        cells = [f"{m:.3f} ± {s:.3f}" for m, s in (row[k] for k in keys)]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {times[name] / seeds:.0f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
