"""DenseMTL's multi-task unsupervised domain adaptation (MTL-UDA) on the synthetic world.

Synthesises the `dense-uda` preset (a labelled source domain of clear daytime scenes, a target
domain of fog / snow / rain at dusk or night), trains on the S-D task set (semantic + depth, the
paper's UDA setting) and scores every variant on held-out *target* frames:

- `source only`: MTL trained on the source domain alone (the lower bound);
- `MTL-UDA`: the same plus the `uda_adversarial` stage kind on the unlabelled target images
  (output-level patch discriminators on the semantic entropy map and the normalised depth);
- `mTEB + UDA`: MTL-UDA with DenseMTL's exchange module (the paper's "Ours");
- `target oracle`: MTL trained on the target's labels (the upper bound; not a UDA method);
- ablations (`--variants`): `MTL-UDA, lambda 0` (the same stage without the adversarial term:
  what seeing target images alone does, through BatchNorm statistics) and `mTEB source only`.

Δ_SD is DenseMTL's Δ_T against `source only` (the paper uses STL-UDA; single-task UDA runs are
left out to fit a CPU budget). Mean ± standard deviation over seeds. The paper's direction
(Synthia / VKITTI2 -> Cityscapes, ResNet-101): MTL-UDA above source-only, Ours above MTL-UDA.

    python benchmarks/densemtl_uda.py --out runs/densemtl_uda --steps 300 --seeds 0 1
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

TASKS = ("semantic", "depth")
HEADLINE = {"semantic": "mIoU", "depth": "RMSE"}
WEIGHTS = {"semantic": 50.0, "depth": 1.0}  # DenseMTL's SD weights (CE x50, berHu x1)
MTEB = [{"type": "mteb", "tasks": list(TASKS), "channels": 32, "downscale": 4}]
# variant -> (exchanges, train sets, adversarial target or None, lambda_adv factor). The two
# ablations separate the adversarial losses from what merely seeing target images does
# (BatchNorm statistics of target batches: lambda 0) and from the exchange module itself.
VARIANTS: dict[str, tuple[list[dict[str, Any]], list[str], str | None, float]] = {
    "source only": ([], ["source"], None, 1.0),
    "MTL-UDA": ([], ["source"], "target", 1.0),
    "mTEB + UDA": (MTEB, ["source"], "target", 1.0),
    "target oracle": ([], ["target"], None, 1.0),
    "MTL-UDA, lambda 0": ([], ["source"], "target", 0.0),
    "mTEB source only": (MTEB, ["source"], None, 1.0),
    "mTEB + UDA, lambda 0": (MTEB, ["source"], "target", 0.0),
}
DEFAULT_VARIANTS = ["source only", "MTL-UDA", "mTEB + UDA", "target oracle"]


def config(
    data: Path, variant: str, steps: int, seed: int, lambda_adv: float, disc_channels: int = 16
) -> RunConfig:
    """A tiny DenseMTL-style S-D run (resnet18 w16, FPN 32, per-pixel decoders)."""
    exchanges, sets, target, factor = VARIANTS[variant]
    stage: dict[str, Any] = {
        "name": "train",
        "steps": steps,
        "batch_size": 4,
        "sets": sets,
        "sampler": "none",
        "optimizer": {"lr": 2e-3, "weight_decay": 0.0, "lr_scale": {"backbone.*": 0.5}},
        "schedule": {"type": "cosine", "warmup_steps": steps // 10},
        "loss_weighting": {"type": "fixed", "weights": WEIGHTS},
        "grad_clip": 10.0,
    }
    if target is not None:
        stage["kind"] = {"type": "uda_adversarial", "target_sets": [target],
                         "lambda_adv": lambda_adv * factor,
                         "discriminator": {"channels": disc_channels}}  # fmt: skip
    tree = {
        "name": "uda",
        "seed": seed,
        "model": {
            "backbone": {"type": "resnet18", "width": 16, "norm": "bn"},
            "neck": {"type": "fpn", "out_channels": 32, "norm": "gn"},
            "tasks": {t: {"head": {"channels": 32}} for t in TASKS},
            "exchanges": exchanges,
        },
        "data": {
            "sets": {
                name: {"root": str(data / "{split}" / name), "tasks": list(TASKS)}
                for name in ("source", "target")
            },
            "transforms": {"heights": [96], "flip": 0.5},
        },
        "recipe": {"stages": [stage]},
        "train": {"accelerator": "cpu", "checkpoint_every_n_steps": 10**6, "log_every_n_steps": 5},
    }
    return validate_tree(tree, {}, RunConfig, "<densemtl_uda>")


def train_and_eval(cfg: RunConfig, out: Path) -> dict[str, float]:
    """Train `cfg` into `out` (replacing an earlier run) and score it on the target's val split."""
    shutil.rmtree(out, ignore_errors=True)
    run = run_recipe(cfg, out, progress=False)
    result = evaluate_model(cfg, run.final_weights, sets=["target"], progress=False,
                            resources=False)  # fmt: skip
    return {f"{t}/{HEADLINE[t]}": float(result.metrics[t][HEADLINE[t]]) for t in TASKS}


def summarise(results: dict[str, list[dict[str, float]]]) -> dict[str, dict[str, list[float]]]:
    """Per variant: each metric and Δ_SD against source-only over seeds, as [mean, stdev]."""
    table: dict[str, dict[str, list[float]]] = {}
    for name, runs in results.items():
        rows = {key: [r[key] for r in runs] for key in runs[0]}
        rows["Δ_SD"] = [
            delta_t(run, base) for run, base in zip(runs, results["source only"], strict=True)
        ]
        table[name] = {
            k: [statistics.fmean(v), statistics.stdev(v) if len(v) > 1 else 0.0]
            for k, v in rows.items()
        }
    return table


def format_table(table: dict[str, dict[str, list[float]]], times: dict[str, float], n: int) -> str:
    """Markdown table: variants as rows, metrics and Δ_SD as columns, mean ± spread."""
    keys = list(next(iter(table.values())))
    lines = ["| variant | " + " | ".join(keys) + " | time / seed (s) |",
             "|---|" + "---|" * (len(keys) + 1)]  # fmt: skip
    for name, row in table.items():
        cells = [f"{m:.3f} ± {s:.3f}" for m, s in (row[k] for k in keys)]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {times[name] / n:.0f} |")
    return "\n".join(lines)


def main() -> None:
    """Synthesise both domains, train every variant per seed, print the table, write JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/densemtl_uda"))
    parser.add_argument("--frames", type=int, default=320, help="training frames (both domains)")
    parser.add_argument("--val-frames", type=int, default=80)
    parser.add_argument("--size", default="160x96", help="WxH of the synthetic world")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--lambda-adv", type=float, default=5e-3, help="DenseMTL: 5e-3")
    parser.add_argument(
        "--disc-channels", type=int, default=16,
        help="first-layer width of the patch discriminators (AdvEnt: 64, sized for ResNet-101; "
        "16 keeps them below the tiny network's cost)",
    )  # fmt: skip
    parser.add_argument("--variants", nargs="+", default=DEFAULT_VARIANTS, choices=list(VARIANTS))
    args = parser.parse_args()
    w, h = (int(v) for v in args.size.split("x"))
    data = args.out / "data"
    for split, frames, seed in (("train", args.frames, 21), ("val", args.val_frames, 22)):
        if not (data / split / "dataset.yaml").is_file():
            generate_dataset(data / split, "dense-uda", frames, (w, h), seed, progress=False)
    results: dict[str, list[dict[str, float]]] = {}
    times: dict[str, float] = {}
    for seed in args.seeds:
        for name in ["source only", *[v for v in args.variants if v != "source only"]]:
            start = time.perf_counter()
            cfg = config(data, name, args.steps, seed, args.lambda_adv, args.disc_channels)
            slug = "".join(c if c.isalnum() else "_" for c in name.lower())
            results.setdefault(name, []).append(train_and_eval(cfg, args.out / f"{slug}-s{seed}"))
            times[name] = times.get(name, 0.0) + time.perf_counter() - start
            print(name, seed, results[name][-1], f"{time.perf_counter() - start:.0f} s", flush=True)
    table = summarise(results)
    print(format_table(table, times, len(args.seeds)))
    (args.out / "results.json").write_text(json.dumps({"runs": results, "table": table}, indent=2))


if __name__ == "__main__":
    main()
