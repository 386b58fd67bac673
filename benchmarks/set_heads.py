"""Set-prediction heads against the heads they replace, on LV-Adapter's disjoint image sets.

`compare` synthesises `lv-disjoint-normal` (drivable 20 : detection 10 : semantic 7) at a
CPU-affordable size and trains, with one recipe, seed and step budget, the tiny three-task network
with (a) per-pixel decoders + Faster R-CNN and (b) MaskFormer (semantic, drivable) + Sparse R-CNN
(detection), plus the mixed variants that swap one family at a time; prints semantic mIoU,
drivable mIoU and detection AP on held-out frames, mean ± spread over seeds.

`speed` times one training step (forward + backward) and one inference pass of a single-task
network at 320x192, batch 4, on CPU with each head family at its reference defaults
(MaskFormer: 100 queries, hidden 256, 6 layers; Sparse R-CNN: 300 proposals, 6 stages) against
the per-pixel decoder / Faster R-CNN, in one run, median of repeated runs.

    python benchmarks/set_heads.py compare --out runs/set_heads --steps 600 --seeds 0 1
    python benchmarks/set_heads.py speed [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from drivemtl.config.loader import validate_tree
from drivemtl.data.synthetic import generate_dataset
from drivemtl.engine.run_config import RunConfig
from drivemtl.engine.trainer import run_recipe
from drivemtl.evaluation.model_eval import evaluate_model

SETS = {"drivable": ["drivable"], "detection": ["detection"], "semantic": ["semantic"]}
HEADLINE = {"semantic": "mIoU", "drivable": "mIoU", "detection": "AP"}
FASTER_RCNN: dict[str, Any] = {
    "num_classes": 10,
    "rpn": {"anchor_sizes": [8, 16, 32, 64, 128], "pre_nms_topk_train": 300,
            "pre_nms_topk_test": 200, "post_nms_topk_train": 100, "post_nms_topk_test": 100,
            "batch_size_per_image": 64},
    "roi": {"batch_size_per_image": 64, "fc_dim": 256, "score_threshold": 0.01},
}  # fmt: skip
# CPU-sized set heads for the comparison (the speed run uses the reference defaults).
MASKFORMER_SMALL = {"type": "maskformer", "num_queries": 30, "hidden_dim": 64, "nheads": 4,
                    "dim_feedforward": 256, "dec_layers": 3, "mask_dim": 32, "conv_dim": 32}  # fmt: skip
SPARSE_RCNN_SMALL = {"type": "sparse_rcnn", "num_classes": 10, "num_proposals": 100,
                     "hidden_dim": 64, "num_stages": 3, "num_heads": 4, "ffn_dim": 256}  # fmt: skip
PER_PIXEL = {"channels": 32}
VARIANTS: dict[str, dict[str, dict[str, Any]]] = {
    "per-pixel + Faster R-CNN": {"semantic": PER_PIXEL, "drivable": PER_PIXEL,
                                 "detection": FASTER_RCNN},
    "MaskFormer + Faster R-CNN": {"semantic": MASKFORMER_SMALL, "drivable": MASKFORMER_SMALL,
                                  "detection": FASTER_RCNN},
    "per-pixel + Sparse R-CNN": {"semantic": PER_PIXEL, "drivable": PER_PIXEL,
                                 "detection": SPARSE_RCNN_SMALL},
    "MaskFormer + Sparse R-CNN": {"semantic": MASKFORMER_SMALL, "drivable": MASKFORMER_SMALL,
                                  "detection": SPARSE_RCNN_SMALL},
}  # fmt: skip


def run_config(
    data: Path, heads: dict[str, dict[str, Any]], steps: int, seed: int, height: int, lr: float
) -> RunConfig:
    """The tiny three-task network with `heads`, set-level round-robin over the disjoint sets."""
    tree = {
        "name": "set_heads",
        "seed": seed,
        "model": {
            "backbone": {"type": "resnet18", "width": 16, "norm": "bn"},
            "neck": {"type": "fpn", "out_channels": 32, "norm": "gn"},
            "tasks": {t: {"head": dict(h)} for t, h in heads.items()},
        },
        "data": {
            "sets": {s: {"root": str(data / "{split}" / s), "tasks": t} for s, t in SETS.items()},
            "transforms": {"heights": [height], "test_height": height, "flip": 0.5},
        },
        "recipe": {"stages": [{
            "name": "joint", "steps": steps, "batch_size": 4, "sampler": "set_round_robin",
            "optimizer": {"type": "adamw", "lr": lr, "weight_decay": 1e-4},
            "schedule": {"type": "cosine", "warmup_steps": steps // 10},
            "grad_clip": 1.0,
        }]},
        "train": {"accelerator": "cpu", "checkpoint_every_n_steps": 10**6, "log_every_n_steps": 10},
    }  # fmt: skip
    return validate_tree(tree, {}, RunConfig, "<set_heads>")


def train_and_eval(cfg: RunConfig, out: Path) -> dict[str, float]:
    """Train `cfg` into `out` (replacing an earlier run there), score it on the val split."""
    shutil.rmtree(out, ignore_errors=True)
    run = run_recipe(cfg, out, progress=False)
    result = evaluate_model(cfg, run.final_weights, progress=False, resources=False)
    return {f"{t}/{m}": float(result.metrics[t][m]) for t, m in HEADLINE.items()}


def compare(args: argparse.Namespace) -> None:
    """Every variant per seed; the table (mean ± stdev over seeds) and results.json."""
    w, h = (int(v) for v in args.size.split("x"))
    data = args.out / "data"
    for split, frames, seed in (("train", args.frames, 21), ("val", args.val_frames, 22)):
        if not (data / split / "dataset.yaml").is_file():
            generate_dataset(
                data / split, "lv-disjoint-normal", frames, (w, h), seed, progress=False
            )
    runs: dict[str, list[dict[str, float]]] = {}
    times: dict[str, list[float]] = {}
    for seed in args.seeds:
        for name in args.variants:
            start = time.perf_counter()
            cfg = run_config(data, VARIANTS[name], args.steps, seed, h, args.lr)
            slug = name.lower().replace(" + ", "_").replace(" ", "").replace("-", "")
            scores = train_and_eval(cfg, args.out / f"{slug}-s{seed}")
            runs.setdefault(name, []).append(scores)
            times.setdefault(name, []).append(time.perf_counter() - start)
            print(f"seed {seed} {name}: {scores} ({times[name][-1]:.0f} s)", flush=True)
    keys = [f"{t}/{m}" for t, m in HEADLINE.items()]
    lines = ["| variant | " + " | ".join(keys) + " | time per run (s) |",
             "|---|" + "---|" * (len(keys) + 1)]  # fmt: skip
    for name, rows in runs.items():
        cells = []
        for key in keys:
            values = [r[key] for r in rows]
            spread = statistics.stdev(values) if len(values) > 1 else 0.0
            cells.append(f"{statistics.fmean(values):.2f} ± {spread:.2f}")
        lines.append(
            f"| {name} | " + " | ".join(cells) + f" | {statistics.fmean(times[name]):.0f} |"
        )
    print("\n".join(lines))
    (args.out / "results.json").write_text(json.dumps({"runs": runs, "times": times}, indent=2))


def _single_task(task: str, head: dict[str, Any]):
    from drivemtl.models import build_model
    from drivemtl.models.config import ModelConfig

    model = ModelConfig.model_validate({
        "backbone": {"type": "resnet18", "width": 16, "norm": "bn"},
        "neck": {"type": "fpn", "out_channels": 256, "norm": "gn"},
        "tasks": {task: {"head": head}},
    })  # fmt: skip
    return build_model(model)


def _median_time(fn, repeats: int) -> float:
    fn()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def speed(args: argparse.Namespace) -> None:
    """Training step and inference time per head family at 320x192, batch 4 (CPU)."""
    from drivemtl.data import build_dataset
    from drivemtl.data.config import DataConfig
    from drivemtl.structures.batch import collate

    rows = []
    with torch.random.fork_rng():
        torch.manual_seed(0)
        root = Path(args.out) / "speed_data"
        if not (root / "dataset.yaml").is_file():
            generate_dataset(root, "lv-full", 4, (320, 192), 0, progress=False)
        data = DataConfig.model_validate({
            "sets": {"full": {"root": str(root / "full"),
                              "tasks": ["semantic", "drivable", "detection"]}},
            "transforms": {"heights": [192], "test_height": 192, "flip": 0.0},
        })  # fmt: skip
        dataset = build_dataset(data, "train")
        batch = collate([dataset[i] for i in range(4)], data.size_divisor)
        cases = [
            ("semantic", "per-pixel (semantic_fpn, 128)", {}),
            ("semantic", "MaskFormer (reference defaults)", {"type": "maskformer"}),
            ("detection", "Faster R-CNN (two_stage)", {"num_classes": 10}),
            ("detection", "Sparse R-CNN (reference defaults)",
             {"type": "sparse_rcnn", "num_classes": 10}),
        ]  # fmt: skip
        for task, label, head in cases:
            model = _single_task(task, head).train()

            def train_step(model=model, task=task) -> None:
                model.zero_grad(set_to_none=True)
                sum(model.losses(batch, [task]).values()).backward()

            def infer(model=model, task=task) -> None:
                with torch.no_grad():
                    model.eval()
                    model.predict(batch, [task])
                    model.train()

            rows.append((label, _median_time(train_step, args.repeats),
                         _median_time(infer, args.repeats)))  # fmt: skip
    print(f"320x192, batch 4, CPU, {torch.get_num_threads()} threads; backbone ResNet-18 w16 + "
          f"FPN 256; median of {args.repeats} runs, seconds")  # fmt: skip
    print(f"{'head':<36}{'train step':>12}{'inference':>12}")
    for label, train_s, infer_s in rows:
        print(f"{label:<36}{train_s:>12.3f}{infer_s:>12.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    cmp = sub.add_parser("compare")
    cmp.add_argument("--out", type=Path, default=Path("runs/set_heads"))
    cmp.add_argument("--frames", type=int, default=296, help="training frames (20:10:7 split)")
    cmp.add_argument("--val-frames", type=int, default=74)
    cmp.add_argument("--size", default="256x144", help="WxH of the synthetic world")
    cmp.add_argument("--steps", type=int, default=600)
    cmp.add_argument("--lr", type=float, default=5e-4)
    cmp.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    cmp.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    spd = sub.add_parser("speed")
    spd.add_argument("--out", type=Path, default=Path("runs/set_heads"))
    spd.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    (compare if args.command == "compare" else speed)(args)


if __name__ == "__main__":
    main()
