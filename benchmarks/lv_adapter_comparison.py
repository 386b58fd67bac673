"""LV-Adapter's Tables 1, 2 and 4 on the synthetic world, every variant from the same CLIP weights.

LV-Adapter starts from CLIP RN50. Without OpenAI's files (and at CPU size) a small CLIP-shaped
model is pretrained here once, contrastively, on captioned frames of a separate `lv-full` pool
(captions from the frames' tags, objects and stuff: `drivemtl.data.captions`), with a BPE
vocabulary learned from those captions and the class names (`drivemtl.engine.clip_pretrain`).
Its image tower is the backbone of every variant and its frozen text tower encodes the prompts.

The multi-task data is `lv-disjoint-normal` (drivable 20 : detection 10 : semantic 7, each image
labelled for one task only). Per seed, with one step budget S and one peak learning rate:

- Table 1 (how to learn from disjoint labels), all pretrain-finetune (one stage of S steps):
  zeroing loss (`sampler: none`), uniform and weighted task sampling (weights = labelled images x
  epochs, LV-Adapter's definition), batch round-robin; self-training (one teacher per task on its
  own set, S/2 steps each; pseudo labels at box score >= 0.5 / pixel confidence >= 0.3; a student
  on ground truth + pseudo labels for S steps); LV-Adapter (pretrain-adapt-finetune with L2V).
- Table 2: pretrain-finetune against pretrain-adapt-finetune (adapt S/6 steps with the backbone
  and the fresh decoders frozen, then fine-tune S*5/6), without an adapter and with L2V.
- Table 4: the adapter's ablations Prompt / V2L / L2V, all pretrain-adapt-finetune.

Prints semantic mIoU, drivable mIoU and detection AP on held-out frames (mean ± stdev over seeds)
and the time per run; writes results.json.

    python benchmarks/lv_adapter_comparison.py --out runs/lv_adapter --steps 300 --seeds 0 1
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import time
from pathlib import Path
from typing import Any

from set_heads import FASTER_RCNN  # the CPU-sized Faster R-CNN of the set-head benchmark

from drivemtl.config.loader import validate_tree
from drivemtl.data.config import DataConfig
from drivemtl.data.synthetic import generate_dataset
from drivemtl.engine.clip_pretrain import CLIPPretrainOptions, pretrain_clip
from drivemtl.engine.run_config import RunConfig
from drivemtl.engine.trainer import run_recipe
from drivemtl.evaluation.model_eval import evaluate_model

TASKS = ("semantic", "drivable", "detection")
SETS = {"drivable": ["drivable"], "detection": ["detection"], "semantic": ["semantic"]}
HEADLINE = {"semantic": "mIoU", "drivable": "mIoU", "detection": "AP"}
CLIP_MEAN = [122.771, 116.746, 104.094]  # CLIP's input normalisation, 0..255 units
CLIP_STD = [68.501, 66.632, 70.323]
HEADS = {"semantic": {"channels": 32}, "drivable": {"channels": 32}, "detection": FASTER_RCNN}
# variant -> (sampler, adapter mode or None, pretrain-adapt-finetune?, with the teachers' pseudo labels?)
VARIANTS: dict[str, tuple[str, str | None, bool, bool]] = {
    "zeroing loss (PF)": ("none", None, False, False),
    "uniform sampling (PF)": ("uniform", None, False, False),
    "weighted sampling (PF)": ("weighted", None, False, False),
    "batch round-robin (PF)": ("batch_round_robin", None, False, False),
    "self-training (PF)": ("none", None, False, True),
    "self-training PF + L2V": ("none", "l2v", False, True),
    "self-training PAF, no adapter": ("none", None, True, True),
    "self-training PAF + Prompt": ("none", "prompt", True, True),
    "self-training PAF + V2L": ("none", "v2l", True, True),
    "LV-Adapter (self-training PAF + L2V)": ("none", "l2v", True, True),
}
TABLES = {
    "Table 1: learning from disjoint labels": [
        "zeroing loss (PF)", "uniform sampling (PF)", "weighted sampling (PF)",
        "batch round-robin (PF)", "self-training (PF)", "LV-Adapter (self-training PAF + L2V)",
    ],
    "Table 2: pretrain-finetune vs pretrain-adapt-finetune": [
        "self-training (PF)", "self-training PAF, no adapter", "self-training PF + L2V",
        "LV-Adapter (self-training PAF + L2V)",
    ],
    "Table 4: the adapter": [
        "self-training (PF)", "self-training PAF, no adapter", "self-training PAF + Prompt",
        "self-training PAF + V2L", "LV-Adapter (self-training PAF + L2V)",
    ],
}  # fmt: skip


def synthesise(out: Path, frames: int, val_frames: int, pool_frames: int, size: tuple[int, int]):
    """The disjoint multi-task sets (train / val) and the captioned pool CLIP is pretrained on."""
    jobs = (
        (out / "data" / "train", "lv-disjoint-normal", frames, 41),
        (out / "data" / "val", "lv-disjoint-normal", val_frames, 42),
        (out / "pool" / "train", "lv-full", pool_frames, 43),
        (out / "pool" / "val", "lv-full", max(32, pool_frames // 8), 44),
    )
    for root, preset, count, seed in jobs:
        if not (root / "dataset.yaml").is_file():
            generate_dataset(root, preset, count, size, seed, progress=False)


def transforms(height: int) -> dict[str, Any]:
    """One training height, CLIP's normalisation (the backbone was pretrained with it)."""
    return {"heights": [height], "test_height": height, "flip": 0.5, "mean": CLIP_MEAN,
            "std": CLIP_STD}  # fmt: skip


def pretrain(out: Path, height: int, steps: int) -> tuple[Path, Path, dict[str, Any]]:
    """The small CLIP every variant starts from (trained once; reused when already there)."""
    clip_dir = out / "clip"
    card = clip_dir / "clip_pretrain.json"
    if not card.is_file():
        data = DataConfig.model_validate({
            "sets": {"full": {"root": str(out / "pool" / "{split}" / "full"), "tasks": list(TASKS)}},
            "transforms": transforms(height),
        })  # fmt: skip
        pretrain_clip(data, clip_dir, CLIPPretrainOptions(steps=steps))
    return clip_dir / "clip.pt", clip_dir / "vocab.txt.gz", json.loads(card.read_text())


def adapter(mode: str, clip: Path, vocab: Path) -> dict[str, Any]:
    """The language-to-vision adapter (or an ablation) serving the three tasks, CPU-sized."""
    return {"type": "lv_adapter", "tasks": list(TASKS), "mode": mode, "heads": 4, "ffn_dim": 128,
            "clip_weights": str(clip), "vocabulary": str(vocab)}  # fmt: skip


def train_stage(name: str, steps: int, lr: float, **extra: Any) -> dict[str, Any]:
    """One training stage: AdamW, linear warm-up over a tenth of it, cosine decay."""
    stage = {"name": name, "steps": steps, "batch_size": 4, "sampler": "none",
             "optimizer": {"type": "adamw", "lr": lr, "weight_decay": 1e-4},
             "schedule": {"type": "cosine", "warmup_steps": max(1, steps // 10)},
             "grad_clip": 10.0}  # fmt: skip
    stage.update(extra)
    return stage


def sampler_fields(sampler: str) -> dict[str, Any]:
    """The stage fields of a sampling scheme. Weighted: every task's epochs equal (the paper
    weighs by each task's single-task schedule, which this world does not define), so the
    weights are the labelled images per task."""
    if sampler != "weighted":
        return {"sampler": sampler}
    return {"sampler": "weighted", "sampler_options": {"task_epochs": dict.fromkeys(TASKS, 1.0)}}


def teacher_stages(steps: int, lr: float) -> list[dict[str, Any]]:
    """One teacher per task on its own set (S/2 steps each), then its pseudo labels for the
    other sets: boxes scoring >= 0.5, segmentation pixels below 0.3 confidence ignored."""
    stages = [
        train_stage(f"teacher_{t}", max(1, steps // 2), lr, tasks=[t], sets=[t], init="scratch")
        for t in TASKS
    ]
    rules = {"detection": {"box_score": 0.5}, "semantic": {"semantic_confidence": 0.3},
             "drivable": {"drivable_confidence": 0.3}}  # fmt: skip
    for task in TASKS:
        kind = {"type": "pseudo_label", "teacher": f"stage:teacher_{task}", **rules[task]}
        stages.append({"name": f"pseudo_{task}", "kind": kind, "tasks": [task], "batch_size": 8})
    return stages


def recipe(variant: str, steps: int, lr: float, pseudo: list[Path]) -> list[dict[str, Any]]:
    """The stages of one variant (PF: one stage; PAF: adapt S/6 with the backbone and the
    fresh decoders frozen, then fine-tune S*5/6), on the teachers' pseudo labels when it uses
    them."""
    sampler, _, adapt, uses_pseudo = VARIANTS[variant]
    extra: dict[str, Any] = sampler_fields(sampler)
    if uses_pseudo:
        extra["pseudo_labels"] = [{"path": str(p)} for p in pseudo]
    if not adapt:
        return [train_stage("finetune", steps, lr, **extra)]
    first = max(1, steps // 6)
    return [
        train_stage("adapt", first, lr, frozen=["@backbone", "@decoder"], **extra),
        train_stage("finetune", steps - first, lr, init="previous", **extra),
    ]


def run_config(
    name: str, stages: list[dict[str, Any]], mode: str | None, args: argparse.Namespace,
    seed: int, clip: Path, vocab: Path,
) -> RunConfig:  # fmt: skip
    """The CLIP-backbone three-task network (with the adapter in `mode`) on the disjoint sets."""
    height = int(args.size.split("x")[1])
    data = args.out / "data"
    model: dict[str, Any] = {
        "backbone": {"type": "clip_rn50", "weights": str(clip)},
        "neck": {"type": "fpn", "out_channels": 32, "norm": "gn"},
        "tasks": {t: {"head": dict(HEADS[t])} for t in TASKS},
    }
    if mode is not None:
        model["adapters"] = [adapter(mode, clip, vocab)]
    tree = {
        "name": "lv_adapter_comparison",
        "seed": seed,
        "model": model,
        "data": {
            "sets": {s: {"root": str(data / "{split}" / s), "tasks": t} for s, t in SETS.items()},
            "transforms": transforms(height),
        },
        "recipe": {"stages": stages},
        "train": {"accelerator": "cpu", "checkpoint_every_n_steps": 10**6, "log_every_n_steps": 10},
    }  # fmt: skip
    return validate_tree(tree, {}, RunConfig, f"<lv_adapter_comparison: {name}>")


def train_teachers(args: argparse.Namespace, seed: int, clip: Path, vocab: Path) -> list[Path]:
    """The seed's teachers and pseudo labels (reused by every student); their folders."""
    out = args.out / "runs" / f"teachers-s{seed}"
    found = sorted(out.glob("stages/*-pseudo_*/pseudo_labels"))
    if len(found) != len(TASKS):
        shutil.rmtree(out, ignore_errors=True)
        stages = teacher_stages(args.steps, args.lr)
        run_recipe(run_config("teachers", stages, None, args, seed, clip, vocab), out,
                   progress=False)  # fmt: skip
        found = sorted(out.glob("stages/*-pseudo_*/pseudo_labels"))
    return found


def train_and_eval(cfg: RunConfig, out: Path) -> dict[str, float]:
    """Train `cfg` into `out` (replacing an earlier run there), score it on the val split."""
    shutil.rmtree(out, ignore_errors=True)
    run = run_recipe(cfg, out, progress=False)
    result = evaluate_model(cfg, run.final_weights, progress=False, resources=False)
    return {f"{t}/{m}": float(result.metrics[t][m]) for t, m in HEADLINE.items()}


def slug(variant: str) -> str:
    """A folder name for a variant."""
    keep = "".join(c if c.isalnum() else "_" for c in variant.lower())
    return "_".join(p for p in keep.split("_") if p)


def table(title: str, names: list[str], runs: dict[str, list[dict[str, float]]],
          times: dict[str, list[float]]) -> list[str]:  # fmt: skip
    """One Markdown table: mean ± stdev over seeds per metric, mean seconds per run."""
    keys = [f"{t}/{m}" for t, m in HEADLINE.items()]
    lines = [f"### {title}", "", "| variant | " + " | ".join(keys) + " | s per run |",
             "|---|" + "---|" * (len(keys) + 1)]  # fmt: skip
    for name in names:
        if name not in runs:
            continue
        cells = []
        for key in keys:
            values = [r[key] for r in runs[name]]
            spread = statistics.stdev(values) if len(values) > 1 else 0.0
            cells.append(f"{statistics.fmean(values):.2f} ± {spread:.2f}")
        lines.append(
            f"| {name} | " + " | ".join(cells) + f" | {statistics.fmean(times[name]):.0f} |"
        )
    return [*lines, ""]


def compare(args: argparse.Namespace) -> None:
    """Pretrain once, every variant per seed; the three tables and results.json."""
    width, height = (int(v) for v in args.size.split("x"))
    synthesise(args.out, args.frames, args.val_frames, args.pool_frames, (width, height))
    start = time.perf_counter()
    clip, vocab, card = pretrain(args.out, height, args.clip_steps)
    print(f"CLIP pretraining: loss {card['first_loss']:.3f} -> {card['last_loss']:.3f}, "
          f"held-out retrieval top-1 {card['retrieval_top1']:.3f} (chance "
          f"{card['retrieval_chance']:.3f}), {time.perf_counter() - start:.0f} s", flush=True)  # fmt: skip
    results = args.out / "results.json"
    saved = json.loads(results.read_text()) if results.is_file() else {}
    runs: dict[str, list[dict[str, float]]] = saved.get("runs", {})
    times: dict[str, list[float]] = saved.get("times", {})
    for seed in args.seeds:
        start = time.perf_counter()
        pseudo = train_teachers(args, seed, clip, vocab)
        times.setdefault("teachers", []).append(time.perf_counter() - start)
        print(f"seed {seed} teachers + pseudo labels: {times['teachers'][-1]:.0f} s", flush=True)
        for name in args.variants:
            if len(runs.get(name, [])) > args.seeds.index(seed):
                continue  # done in an earlier, interrupted invocation
            start = time.perf_counter()
            _, mode, _, _ = VARIANTS[name]
            stages = recipe(name, args.steps, args.lr, pseudo)
            cfg = run_config(name, stages, mode, args, seed, clip, vocab)
            scores = train_and_eval(cfg, args.out / "runs" / f"{slug(name)}-s{seed}")
            runs.setdefault(name, []).append(scores)
            times.setdefault(name, []).append(time.perf_counter() - start)
            print(f"seed {seed} {name}: {scores} ({times[name][-1]:.0f} s)", flush=True)
            results.write_text(json.dumps({"runs": runs, "times": times, "clip": card}, indent=2))
    lines = [line for title, names in TABLES.items() for line in table(title, names, runs, times)]
    print("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/lv_adapter"))
    parser.add_argument("--frames", type=int, default=296, help="training frames (20:10:7 split)")
    parser.add_argument("--val-frames", type=int, default=74)
    parser.add_argument("--pool-frames", type=int, default=384, help="CLIP pretraining frames")
    parser.add_argument("--clip-steps", type=int, default=600, help="CLIP pretraining steps")
    parser.add_argument("--size", default="256x144", help="WxH of the synthetic world")
    parser.add_argument("--steps", type=int, default=300, help="S: steps of a multi-task run")
    parser.add_argument("--lr", type=float, default=1e-3, help="peak lr of every stage")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    compare(parser.parse_args())


if __name__ == "__main__":
    main()
