"""VTDNet's Table 2 on the synthetic world: single-task baselines, the naive multi-task baseline,
the multi-task baseline with CPF and VTDNet with CPF, scored per task and with VTDA.

Data (synthesised once, train / val from different world seeds): preset `bdd-sets`' image sets
`detection` (tagging, detection, pose, drivable, lanes) and `segmentation` (semantic, instance);
its JPEG tracking clips are replaced by preset `tracking`'s clips of the same share (30 %),
which carry the same MOT / MOTS labels but are written losslessly (PNG), so the unsupervised
flow decoder can train photometrically on them (docs/video_tasks.md), and hold the true flow
(EPE). So all ten VTD tasks are trained and scored.

Network: ResNet-18 width 16 + FPN 32 with narrow heads and VTDNet's decoders in every variant
(the paper's baselines use VTDNet's task decoders, its Table 8): a shared Semantic-FPN
aggregation for the segmentation group, DCNv2 + GN dense decoders (`head.conv: deform`), L1 box
regression, Table 11's loss weights. VTDNet adds only the interaction blocks (Intra-IB
segmentation / localization, Cross-IB), at CPU-narrow widths; `--baseline-decoders plain`
gives the baselines plain 3x3 decoders and no group aggregation instead.

Variants, with one step budget S (`--steps`, the length of multi-task joint training). A stage
the paper gives in epochs (E, its own sets) gets S x E / 12 x (its sets' frames / all frames)
steps, i.e. the paper's schedules in proportion, the joint stage's 12 epochs = S:

- `st`: one network per task on that task's sets (MOT: detection + tracking sets, MOTS:
  detection + segmentation + tracking, as the paper's QDTrack(-MOTS) baselines), for Table 15's
  epochs (tagging 60, detection / instance / pose 36, drivable / lanes 18, semantic 183, MOT /
  MOTS 12, flow 36) and its schedule shapes; each scores its own task, VTDA over them together;
- `mt`: all tasks jointly, one stage of S steps, set-level round-robin, no CPF, no blocks;
- `mt_cpf`: configs/recipes/vtd_cpf.yaml with its eight stages, lengths as above (the teachers
  with their single-task schedules, per-decoder fine-tuning 6 epochs of each decoder's data),
  AdamW learning rates scaled by `--lr` / 1e-4 (so the ratios stay: decoders at lr / 10), the
  SGD teachers as AdamW at `--lr`; `mt_cpf` and `vtdnet_cpf` freeze in curriculum_inst what
  curriculum_loc trained (VTDNet: the interaction blocks too, as the recipe says);
- `vtdnet_cpf`: the same with the interaction blocks.

Every training stage: batch 4, AdamW (weight decay 0.05), warm-up over a twentieth of it,
gradient clipping at 10. Prints each task's metrics (the VTDA inputs, plus flow EPE), the four
VTDA group scores and VTDA (mean ± stdev over `--seeds`), params and MACs of each unified
network against the sum of its single-task networks (`drivemtl.models.summary`, RoI heads on
20 boxes per image) at the benchmark size; writes results.json (resumable: finished runs are
skipped). `--r50` adds the R50 VTDNet's summary at 720x1280 (configs/models/r50_vtdnet.yaml).

    OMP_NUM_THREADS=1 python benchmarks/vtd_comparison.py --out runs/vtd_comparison \\
        --steps 600 --seeds 0 1

Cost: about 32 x S training steps per seed (single-task 13.4 S, naive MT 1 S, each CPF run
8.8 S); at 256x144, 1 thread, roughly 0.3 (single-task) to 0.9 (joint) s per step, so S = 600
takes about 2.5 h per seed (docs/vtd_comparison.md; a rough extrapolation from a smoke run).
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import statistics
import time
import warnings
from pathlib import Path
from typing import Any

import yaml

from drivemtl.config.loader import validate_tree
from drivemtl.data.synthetic import generate_dataset
from drivemtl.data.synthetic.presets import set_sizes
from drivemtl.engine.run_config import RunConfig
from drivemtl.engine.trainer import run_recipe
from drivemtl.evaluation.model_eval import evaluate_model
from drivemtl.evaluation.vtda import GROUPS, RESULT_KEYS, vtda, vtda_scores

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "configs" / "recipes" / "vtd_cpf.yaml"
R50_VTDNET = ROOT / "configs" / "models" / "r50_vtdnet.yaml"
TASKS = ("tagging", "drivable", "lanes", "semantic", "instance", "detection", "pose", "mot",
         "mots", "flow")  # fmt: skip
SETS: dict[str, tuple[str, ...]] = {
    "detection": ("tagging", "detection", "pose", "drivable", "lanes"),
    "segmentation": ("semantic", "instance"),
    "tracking": ("mot", "mots", "flow"),
}
SEGMENTATION_GROUP = ("semantic", "drivable", "lanes")
TRACK_SHARE = 0.3  # bdd-sets' share of tracking clips, kept for preset `tracking`'s clips
VARIANTS = ("st", "mt", "mt_cpf", "vtdnet_cpf")
TITLES = {"st": "ST (one network per task)", "mt": "MT, naive", "mt_cpf": "MT + CPF",
          "vtdnet_cpf": "VTDNet + CPF"}  # fmt: skip
JOINT_EPOCHS = 12  # VTDNet's joint training: S steps stand for these epochs of all sets
# Single-task baselines (Table 15): sets, epochs, schedule (milestones as fractions, or poly).
ST_SETS: dict[str, tuple[str, ...]] = {
    "tagging": ("detection",), "drivable": ("detection",), "lanes": ("detection",),
    "semantic": ("segmentation",), "instance": ("segmentation",), "detection": ("detection",),
    "pose": ("detection",), "mot": ("detection", "tracking"),
    "mots": ("detection", "segmentation", "tracking"), "flow": ("tracking",),
}  # fmt: skip
ST_EPOCHS = {"tagging": 60, "drivable": 18, "lanes": 18, "semantic": 183, "instance": 36,
             "detection": 36, "pose": 36, "mot": 12, "mots": 12, "flow": 36}  # fmt: skip
ST_SCHEDULE: dict[str, Any] = {
    "tagging": [30 / 60, 45 / 60], "drivable": "poly", "lanes": "poly", "semantic": "poly",
    "instance": [24 / 36, 33 / 36], "detection": [24 / 36, 33 / 36], "pose": [24 / 36, 33 / 36],
    "mot": [8 / 12, 11 / 12], "mots": [8 / 12, 11 / 12], "flow": [24 / 36, 33 / 36],
}  # fmt: skip
# Tasks a single-task network of a task also trains (MOT / MOTS need the detector's boxes, MOTS
# joins MOT's ids with the instance masks); only the task itself is scored.
ST_MODEL_TASKS = {"mot": ("detection", "mot"), "mots": ("detection", "instance", "mot", "mots")}
RECIPE_LR = 1e-4  # the recipe's AdamW lr, which --lr replaces (ratios kept)
DETECTION: dict[str, Any] = {
    "num_classes": 8,  # VTD: eight thing classes, lights / signs are stuff
    "rpn": {"anchor_sizes": [8, 16, 32, 64, 128], "pre_nms_topk_train": 300,
            "pre_nms_topk_test": 200, "post_nms_topk_train": 100, "post_nms_topk_test": 100,
            "batch_size_per_image": 64},
    "roi": {"batch_size_per_image": 64, "fc_dim": 64, "detections_per_image": 30,
            "score_threshold": 0.01},
}  # fmt: skip
MOT_HEAD = {"channels": 32, "num_convs": 2, "norm_groups": 8, "fc_dim": 64, "embed_dim": 32,
            "rois_per_image": 64}  # fmt: skip
FLOW_HEAD = {"strides": [32, 16, 8, 4], "decoder_widths": [32, 32, 24, 16],
             "context_widths": [32, 32, 32, 16], "context_dilations": [1, 2, 4, 1],
             "bidirectional": False}  # fmt: skip
LOSS_WEIGHTS = {"tagging": 0.05, "semantic": 1.0, "drivable": 1.0, "lanes": 2.0,
                "detection": 2.0, "instance": 2.0, "pose": 800.0, "mot": 1.0, "flow": 1.0}  # fmt: skip
# VTDNet's blocks at CPU width (FPN 32): C' 16 per task, C'' 32.
INTERACTIONS = [
    {"type": "vtd_intra", "groups": ["segmentation"], "channels": 16, "heads": 2},
    {"type": "vtd_intra", "groups": ["localization"], "channels": 16, "heads": 2},
    {"type": "vtd_cross", "groups": ["segmentation", "localization"], "channels": 32, "heads": 4},
]
# Rows of the per-task table: the VTDA inputs (by our evaluators' keys), then flow EPE.
METRICS = [*RESULT_KEYS.values(), "flow/EPE"]
BATCH = 4


# -- data ----------------------------------------------------------------------------------------
def synthesise(data: Path, frames: int, val_frames: int, size: tuple[int, int]) -> float:
    """bdd-sets' image sets and `tracking`'s lossless clips, train / val; seconds taken."""
    start = time.perf_counter()
    for split, count, seed in (("train", frames, 61), ("val", val_frames, 62)):
        jobs = (("bdd", "bdd-sets", count), ("clips", "tracking", round(TRACK_SHARE * count)))
        for folder, preset, n in jobs:
            root = data / split / folder
            if not (root / "dataset.yaml").is_file():
                generate_dataset(root, preset, max(1, n), size, seed, progress=False)
    return time.perf_counter() - start


def set_frames(frames: int) -> dict[str, int]:
    """Training frames per image set (as `generate_dataset` splits them)."""
    counts = {spec.name: n for spec, n in set_sizes("bdd-sets", frames)}
    counts["tracking"] = max(1, round(TRACK_SHARE * frames))
    return counts


def set_root(data: Path, name: str) -> str:
    """The `{split}` root of an image set."""
    folder = "clips" if name == "tracking" else "bdd"
    return str(data / "{split}" / folder / name)


def data_tree(data: Path, tasks: list[str], height: int, sampling: str) -> dict[str, Any]:
    """The image sets holding labels of `tasks`, clips with one reference (training: within
    +-3, QDTrack's, each set declaring only `tasks`; evaluation: the next frame, for flow, each
    set declaring all it carries, since the flow proxy reads the clips' MOTS masks)."""
    sets: dict[str, Any] = {}
    for name, carried in SETS.items():
        if not any(t in tasks for t in carried):
            continue
        declared = list(carried) if sampling == "next" else [t for t in carried if t in tasks]
        sets[name] = {"root": set_root(data, name), "tasks": declared}
        if name == "tracking":
            sets[name]["clip"] = {"length": 2, "sampling": sampling, "window": 3}
    return {"sets": sets,
            "transforms": {"heights": [height], "test_height": height, "flip": 0.5}}  # fmt: skip


# -- model ---------------------------------------------------------------------------------------
def head(task: str, vtd_decoders: bool, support_detector: bool) -> dict[str, Any]:
    """A task's narrow head (VTDNet's decoder options when `vtd_decoders`)."""
    if task in SEGMENTATION_GROUP:
        extra = {"conv": "deform", "shared_convs": 1} if vtd_decoders else {}
        return {"channels": 32, **extra}
    if task == "detection":
        out = json.loads(json.dumps(DETECTION))
        if vtd_decoders:
            out["rpn"]["reg_loss"] = out["roi"]["reg_loss"] = "l1"
        return out
    if task == "tagging":
        return {"attribute_weights": {"timeofday": 0.0}}  # VTD tags weather and scene
    out = {"instance": {"channels": 32, "num_convs": 2}, "pose": {"channels": 32, "num_convs": 2},
           "mot": dict(MOT_HEAD), "mots": {}, "flow": dict(FLOW_HEAD)}[task]  # fmt: skip
    if support_detector and task in ("instance", "pose", "mot"):
        out["detector"] = head("detection", vtd_decoders, False)
    return out


def model_tree(tasks: list[str], vtd_decoders: bool, blocks: bool) -> dict[str, Any]:
    """The tiny network of `tasks` (VTDNet's decoders, its interaction blocks when `blocks`)."""
    alone = "detection" not in tasks  # RoI tasks then build their own support detector
    specs = {}
    for task in tasks:
        spec: dict[str, Any] = {"head": head(task, vtd_decoders, alone)}
        if task in LOSS_WEIGHTS:
            spec["loss_weight"] = LOSS_WEIGHTS[task]
        specs[task] = spec
    tree: dict[str, Any] = {
        "backbone": {"type": "resnet18", "width": 16, "norm": "bn"},
        "neck": {"type": "fpn", "out_channels": 32, "norm": "gn"},
        "tasks": specs,
    }
    if vtd_decoders and any(t in SEGMENTATION_GROUP for t in tasks):
        tree["groups"] = {"segmentation": {"type": "semantic_fpn", "channels": 32}}
    if blocks:
        tree["interactions"] = [json.loads(json.dumps(b)) for b in INTERACTIONS]
    return tree


# -- stages --------------------------------------------------------------------------------------
def stage_steps(steps: int, epochs: float, sets: list[str], frames: dict[str, int]) -> int:
    """Steps standing for `epochs` over `sets`: S x epochs / 12 x their share of all frames."""
    share = sum(frames[s] for s in sets) / sum(frames.values())
    return max(1, round(steps * epochs / JOINT_EPOCHS * share))


def schedule(shape: Any, steps: int) -> dict[str, Any]:
    """A step schedule at `shape`'s fractions of the stage (or poly), warm-up 1/20 of it."""
    warmup = max(1, steps // 20)
    if shape == "poly":
        return {"type": "poly", "power": 0.9, "min_lr_factor": 0.01, "warmup_steps": warmup}
    milestones = sorted({max(1, round(f * steps)) for f in shape})
    return {"type": "step", "milestones": milestones, "warmup_steps": warmup}


def adamw(lr: float) -> dict[str, Any]:
    """AdamW with VTDNet's weight decay."""
    return {"type": "adamw", "lr": lr, "weight_decay": 0.05}


def single_task_stage(task: str, args: argparse.Namespace, frames: dict[str, int]) -> dict:
    """The single-task baseline's one stage: its sets, Table 15's epochs and schedule shape."""
    sets = list(ST_SETS[task])
    steps = stage_steps(args.steps, ST_EPOCHS[task], sets, frames)
    return {"name": f"single_{task}", "sets": sets, "steps": steps, "batch_size": BATCH,
            "sampler": "set_round_robin" if len(sets) > 1 else "none",
            "optimizer": adamw(args.lr), "schedule": schedule(ST_SCHEDULE[task], steps),
            "grad_clip": 10.0}  # fmt: skip


def naive_stage(args: argparse.Namespace) -> dict[str, Any]:
    """The naive multi-task baseline: every task on every set for S steps (the joint stage)."""
    return {"name": "joint", "steps": args.steps, "batch_size": BATCH,
            "sampler": "set_round_robin", "optimizer": adamw(args.lr),
            "schedule": schedule([8 / 12, 11 / 12], args.steps), "grad_clip": 10.0}  # fmt: skip


def scale_stage(
    stage: dict[str, Any], args: argparse.Namespace, frames: dict[str, int], tasks: list[str]
) -> dict[str, Any]:
    """One CPF stage at the benchmark's budget: epochs -> steps, batch 4, lr scaled."""
    out = dict(stage)
    out["batch_size"] = BATCH
    if out.get("kind", {}).get("type") == "pseudo_label":
        return out
    name = out["name"]
    if name.startswith("teacher_"):  # the single-task baseline's schedule (Table 15)
        task = name.removeprefix("teacher_")
        steps = stage_steps(args.steps, ST_EPOCHS[task], out["sets"], frames)
        out.pop("epochs", None)
        out.update(steps=steps, optimizer=adamw(args.lr), grad_clip=10.0,
                   schedule=schedule(ST_SCHEDULE[task], steps))  # fmt: skip
        return out
    epochs = out.pop("epochs")
    if out.get("kind", {}).get("type") == "per_decoder":
        steps = decoder_steps(args.steps, epochs, tasks, frames)
    else:
        steps = stage_steps(args.steps, epochs, out.get("sets") or list(frames), frames)
    lr = out["optimizer"]["lr"] * args.lr / RECIPE_LR
    sched = out.get("schedule", {})
    shape = [m / epochs for m in sched.get("milestones", [])]
    out.update(steps=steps, optimizer=adamw(lr), grad_clip=10.0)
    out["schedule"] = schedule(shape, steps) if shape else {"type": "constant"}
    return out


def decoder_steps(steps: int, epochs: float, tasks: list[str], frames: dict[str, int]) -> int:
    """Per-decoder fine-tuning has one length for every decoder: the mean over the decoders
    of `epochs` over each decoder's own sets."""
    owned = [t for t in tasks if t != "mots"]  # MOTS has no decoder
    sets = {t: [s for s, carried in SETS.items() if t in carried] for t in owned}
    return round(statistics.fmean(stage_steps(steps, epochs, sets[t], frames) for t in owned))


def cpf_stages(
    args: argparse.Namespace, frames: dict[str, int], tasks: list[str], blocks: bool
) -> list[dict[str, Any]]:
    """configs/recipes/vtd_cpf.yaml at the budget, restricted to `tasks` (stages left without a
    task dropped, references to them removed)."""
    stages = yaml.safe_load(RECIPE.read_text(encoding="utf-8"))["recipe"]["stages"]
    kept: list[dict[str, Any]] = []
    for stage in stages:
        stage = dict(stage)
        if stage.get("tasks") is not None:
            stage["tasks"] = [t for t in stage["tasks"] if t in tasks]
            if not stage["tasks"]:
                continue
        if stage["name"] == "curriculum_inst":
            frozen = [p for p in stage["frozen"] if p.startswith("@") or p.split(".")[1] in tasks]
            stage["frozen"] = frozen + (["@interaction"] if blocks else [])
        kept.append(stage)
    return [scale_stage(s, args, frames, tasks) for s in prune_references(kept)]


def prune_references(stages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Drop references to stages that were dropped (and pseudo stages without their teacher)."""
    names = {s["name"] for s in stages}
    out = []
    for stage in stages:
        teacher = stage.get("kind", {}).get("teacher", "")
        if teacher.startswith("stage:") and teacher[6:] not in names:
            names.discard(stage["name"])
            continue
        out.append(stage)
    for stage in out:
        stage["pseudo_labels"] = [p for p in stage.get("pseudo_labels", [])
                                  if p.get("stage") in names]  # fmt: skip
        init = stage.get("init", "")
        if init.startswith("stage:") and init[6:] not in names:
            trained = [s["name"] for s in out[: out.index(stage)] if "kind" not in s
                       and not s["name"].startswith("teacher_")]  # fmt: skip
            stage["init"] = f"stage:{trained[-1]}" if trained else "scratch"
    return out


# -- runs ----------------------------------------------------------------------------------------
def run_config(
    name: str, model_tasks: list[str], stages: list[dict[str, Any]], args: argparse.Namespace,
    seed: int, blocks: bool, sampling: str = "window",
) -> RunConfig:  # fmt: skip
    """A run of the tiny network of `model_tasks` with `stages` (`sampling`: clip references)."""
    height = int(args.size.split("x")[1])
    vtd_decoders = args.baseline_decoders == "vtd" or blocks
    tree = {
        "name": "vtd_comparison",
        "seed": seed,
        "model": model_tree(model_tasks, vtd_decoders, blocks),
        "data": data_tree(args.out / "data", model_tasks, height, sampling),
        "recipe": {"stages": stages},
        "train": {"accelerator": "cpu", "checkpoint_every_n_steps": 10**6, "log_every_n_steps": 10},
    }  # fmt: skip
    return validate_tree(tree, {}, RunConfig, f"<vtd_comparison: {name}>")


def train_and_eval(
    name: str, model_tasks: list[str], stages: list[dict[str, Any]], args: argparse.Namespace,
    seed: int, blocks: bool,
) -> dict[str, Any]:  # fmt: skip
    """Train into `out/runs/NAME-sSEED` (replacing an earlier try), score on the val split with
    next-frame clip references; metrics per task, seconds and steps trained."""
    cfg = run_config(name, model_tasks, stages, args, seed, blocks)
    eval_cfg = run_config(name, model_tasks, stages, args, seed, blocks, sampling="next")
    out = args.out / "runs" / f"{name}-s{seed}"
    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    run = run_recipe(cfg, out, progress=False)
    train_s = time.perf_counter() - start
    result = evaluate_model(eval_cfg, run.final_weights, progress=False, resources=False)
    metrics = {t: {k: float(v) for k, v in m.items()} for t, m in result.metrics.items()}
    return {"metrics": metrics, "train_s": train_s, "eval_s": time.perf_counter() - start - train_s,
            "steps": total_steps(stages, model_tasks)}  # fmt: skip


def rescore(name: str, model_tasks: list[str], stages: list[dict[str, Any]],
            args: argparse.Namespace, seed: int, blocks: bool, record: dict[str, Any]) -> None:  # fmt: skip
    """Score a finished run's final weights again with today's evaluators (`--rescore`), in
    place: metrics and evaluation seconds (training seconds and steps kept)."""
    eval_cfg = run_config(name, model_tasks, stages, args, seed, blocks, sampling="next")
    start = time.perf_counter()
    weights = args.out / "runs" / f"{name}-s{seed}" / "final.safetensors"
    result = evaluate_model(eval_cfg, weights, progress=False, resources=False)
    record["metrics"] = {t: {k: float(v) for k, v in m.items()} for t, m in result.metrics.items()}
    record["eval_s"] = time.perf_counter() - start


def total_steps(stages: list[dict[str, Any]], tasks: list[str]) -> int:
    """Optimiser steps a recipe trains (a per-decoder stage: its length per decoder)."""
    decoders = len([t for t in tasks if t != "mots"])
    return sum(s.get("steps", 0) * (decoders if s.get("kind", {}).get("type") == "per_decoder"
                                    else 1) for s in stages)  # fmt: skip


def flat(metrics: dict[str, dict[str, float]], only: list[str] | None = None) -> dict[str, float]:
    """{task/metric: value} of `only` tasks (default: all but the vtda / resources rows)."""
    keep = only or [t for t in metrics if t not in ("vtda", "resources")]
    return {f"{t}/{k}": v for t in keep for k, v in metrics.get(t, {}).items()}


def scores(variant_runs: dict[str, dict[str, Any]], variant: str, seed: str) -> dict[str, float]:
    """One seed's row of a variant: every task metric, the VTDA groups and VTDA (ST: each task
    from its own network, VTDA over them together, as the paper's ST row)."""
    metrics: dict[str, dict[str, float]] = {}
    if variant == "st":
        for name, run in variant_runs.items():
            task = name.removeprefix("st/")
            if name.startswith("st/") and seed in run:
                metrics[task] = run[seed]["metrics"].get(task, {})
    else:
        metrics = variant_runs[variant][seed]["metrics"]
    row = {k: v for k, v in flat(metrics).items() if k in METRICS}
    row.update(vtda(vtda_scores({t: m for t, m in metrics.items() if t != "vtda"})).as_dict())
    return row


# -- resources -----------------------------------------------------------------------------------
def resources(tasks: list[str], args: argparse.Namespace) -> dict[str, dict[str, float]]:
    """Params / GMACs of each unified network and of the sum of its single-task networks at the
    benchmark size (RoI heads on 20 boxes per image); the R50 VTDNet at 720x1280 with `--r50`."""
    from drivemtl.models import build_model
    from drivemtl.models.config import ModelConfig
    from drivemtl.models.summary import summarize

    w, h = (int(v) for v in args.size.split("x"))
    out: dict[str, dict[str, float]] = {}
    vtd_decoders = args.baseline_decoders == "vtd"
    for name, tree in (("MT", model_tree(tasks, vtd_decoders, False)),
                       ("VTDNet", model_tree(tasks, True, True))):  # fmt: skip
        model = build_model(ModelConfig.model_validate(tree))
        out[name] = summary_row(summarize(model, (h, w), rois_per_image=20))
    if args.r50:
        from drivemtl.engine.run_config import load_run_config

        model = build_model(load_run_config(R50_VTDNET, []).model)
        out["R50 VTDNet, 720x1280"] = summary_row(summarize(model, (720, 1280), rois_per_image=20))
    return out


def summary_row(summary: Any) -> dict[str, float]:
    """Unified and summed single-task params (M) and GMACs, and the MAC ratio."""
    return {"params_M": summary.total_params / 1e6, "GMACs": summary.total_macs / 1e9,
            "st_params_M": summary.single_task_params / 1e6,
            "st_GMACs": summary.single_task_macs / 1e9, "ratio": summary.ratio()}  # fmt: skip


# -- tables --------------------------------------------------------------------------------------
def cell(values: list[float]) -> str:
    """mean ± stdev (NaN values dropped; '-' when none)."""
    values = [v for v in values if not math.isnan(v)]
    if not values:
        return "-"
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.2f} ± {spread:.2f}"


def tables(rows: dict[str, list[dict[str, float]]], res: dict[str, dict[str, float]],
           cost: dict[str, float]) -> str:  # fmt: skip
    """The metric table (rows: metrics; columns: variants), the resource table."""
    names = [v for v in VARIANTS if rows.get(v)]
    keys = [*METRICS, *[f"VTDA/{g}" for g in GROUPS], "VTDA"]
    lines = ["| metric | " + " | ".join(TITLES[v] for v in names) + " |",
             "|---|" + "---|" * len(names)]  # fmt: skip
    for key in keys:
        cells = [cell([r.get(key, math.nan) for r in rows[v]]) for v in names]
        if any(c != "-" for c in cells):
            lines.append(f"| {key} | " + " | ".join(cells) + " |")
    lines.append("| training s per seed | " + " | ".join(f"{cost[v]:.0f}" for v in names) + " |")
    lines += ["", "| network | params (M) | GMACs | sum of single-task params (M) | "
              "sum of single-task GMACs | MACs ratio |", "|---|---|---|---|---|---|"]  # fmt: skip
    for name, r in res.items():
        lines.append(f"| {name} | {r['params_M']:.3f} | {r['GMACs']:.3f} | {r['st_params_M']:.3f}"
                     f" | {r['st_GMACs']:.3f} | {100 * r['ratio']:.1f} % |")  # fmt: skip
    return "\n".join(lines)


# -- main ----------------------------------------------------------------------------------------
def planned(args: argparse.Namespace, frames: dict[str, int]) -> list[tuple[str, list[str], list,
                                                                            bool]]:  # fmt: skip
    """(run name, model tasks, stages, with blocks) of every run of one seed."""
    tasks = list(args.tasks)
    runs: list[tuple[str, list[str], list, bool]] = []
    if "st" in args.variants:
        for task in tasks:
            model_tasks = [t for t in ST_MODEL_TASKS.get(task, (task,)) if t in TASKS]
            stage = single_task_stage(task, args, frames)
            stage["sets"] = [s for s in stage["sets"]
                             if any(t in SETS[s] for t in model_tasks)]  # fmt: skip
            runs.append((f"st/{task}", model_tasks, [stage], False))
    if "mt" in args.variants:
        runs.append(("mt", tasks, [naive_stage(args)], False))
    for variant, blocks in (("mt_cpf", False), ("vtdnet_cpf", True)):
        if variant in args.variants:
            runs.append((variant, tasks, cpf_stages(args, frames, tasks, blocks), blocks))
    return runs


def compare(args: argparse.Namespace) -> None:
    """Synthesise once, every run per seed (skipping finished ones), the tables, results.json."""
    w, h = (int(v) for v in args.size.split("x"))
    synth_s = synthesise(args.out / "data", args.frames, args.val_frames, (w, h))
    frames = set_frames(args.frames)
    results = args.out / "results.json"
    saved = json.loads(results.read_text()) if results.is_file() else {}
    runs: dict[str, dict[str, Any]] = saved.get("runs", {})
    for seed in args.seeds:
        for name, model_tasks, stages, blocks in planned(args, frames):
            if str(seed) in runs.get(name, {}):
                if args.rescore:
                    record = runs[name][str(seed)]
                    rescore(name.replace("/", "_"), model_tasks, stages, args, seed, blocks,
                            record)  # fmt: skip
                    runs = save_run(results, name, str(seed), record, synth_s)
                continue  # done in an earlier, interrupted invocation
            record = train_and_eval(name.replace("/", "_"), model_tasks, stages, args, seed,
                                    blocks)  # fmt: skip
            print(f"seed {seed} {name}: {record['steps']} steps, {record['train_s']:.0f} s train, "
                  f"{record['eval_s']:.0f} s eval", flush=True)  # fmt: skip
            runs = save_run(results, name, str(seed), record, synth_s)
    seeds = [str(s) for s in args.seeds]
    rows = {v: [scores(runs, v, s) for s in seeds] for v in args.variants}
    cost = {v: variant_seconds(runs, v, seeds) for v in args.variants}
    res = resources(list(args.tasks), args)
    record = {"args": {k: str(v) for k, v in vars(args).items()}, "synth_s": synth_s,
              "frames": frames, "runs": runs, "rows": rows, "resources": res}  # fmt: skip
    results.write_text(json.dumps(record, indent=2))
    print(f"{args.frames} training / {args.val_frames} val frames at {args.size} (sets {frames}), "
          f"S = {args.steps}, seeds {args.seeds}; synthesis {synth_s:.0f} s")  # fmt: skip
    print(tables(rows, res, cost))


def save_run(results: Path, name: str, seed: str, record: dict[str, Any], synth_s: float
             ) -> dict[str, dict[str, Any]]:  # fmt: skip
    """Add one finished run to results.json, re-reading it first so that processes running
    other seeds into the same `--out` keep each other's runs; the merged runs."""
    saved = json.loads(results.read_text()) if results.is_file() else {}
    runs: dict[str, dict[str, Any]] = saved.get("runs", {})
    runs.setdefault(name, {})[seed] = record
    tmp = results.with_suffix(f".{seed}.tmp")
    tmp.write_text(json.dumps({**saved, "runs": runs, "synth_s": synth_s}, indent=2))
    tmp.replace(results)
    return runs


def variant_seconds(runs: dict[str, dict[str, Any]], variant: str, seeds: list[str]) -> float:
    """Mean training + evaluation seconds of one seed of a variant (ST: all its networks)."""
    names = [n for n in runs if n == variant or (variant == "st" and n.startswith("st/"))]
    per_seed = [sum(runs[n][s]["train_s"] + runs[n][s]["eval_s"] for n in names if s in runs[n])
                for s in seeds]  # fmt: skip
    return statistics.fmean(per_seed) if per_seed else math.nan


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/vtd_comparison"))
    parser.add_argument("--frames", type=int, default=400,
                        help="training frames (detection 5 : segmentation 2 : tracking 3)")  # fmt: skip
    parser.add_argument("--val-frames", type=int, default=120)
    parser.add_argument("--size", default="256x144", help="WxH of the synthetic world")
    parser.add_argument("--steps", type=int, default=600, help="S: steps of joint training")
    parser.add_argument("--lr", type=float, default=1e-3, help="AdamW lr standing for 1e-4")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=TASKS)
    parser.add_argument("--baseline-decoders", choices=("vtd", "plain"), default="vtd",
                        help="the baselines' decoders: VTDNet's (the paper) or plain 3x3")  # fmt: skip
    parser.add_argument(
        "--r50",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also summarise the R50 VTDNet at 720x1280 (about 30 s)",
    )
    parser.add_argument("--rescore", action="store_true",
                        help="score finished runs' final weights again (after evaluator changes)")  # fmt: skip
    args = parser.parse_args()
    warnings.filterwarnings("ignore", ".*smaller than the logging interval.*")
    missing = [t for t in args.tasks if t in ST_MODEL_TASKS
               for r in ST_MODEL_TASKS[t] if r not in args.tasks and r != "detection"]  # fmt: skip
    if missing:
        parser.error(f"--tasks: mot / mots need {sorted(set(missing))} as well")
    compare(args)


if __name__ == "__main__":
    main()
