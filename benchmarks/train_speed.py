"""Training speed of the demo's step, this tree against an older revision, in one run.

What is timed (CPU, the demo's ResNet-18 width-16 ten-task network at its 320x192 size):
- `step <set>`: one training step (forward, losses, backward, AdamW) on a fixed batch of 4 from
  each image set of the demo (the detection set and the segmentation set), median over steps;
- `recipe`: seconds per step of `run_recipe` on the demo recipe (data loading, Lightning, grad
  clipping, logging included), from the difference of two run lengths so start-up cancels.

With `--baseline REV` the same measurement runs in a subprocess on `git archive REV` (the old
code) and on this tree, alternating for `--rounds` rounds on the same generated data, and the
first step's per-task losses of the two are compared (same seed, same batch: a faster step must
compute the same thing). Also on a GPU (`--device cuda`): the ResNet-50 ten-task config at
720x1280 in bf16, images/s.

    python benchmarks/train_speed.py --baseline 180b834 [--rounds 3] [--steps 12]
    python benchmarks/train_speed.py --device cuda
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from io import BytesIO
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TAG = "TRAIN_SPEED_JSON "


# -- the measurement (runs in a child process on one source tree) ---------------------------------
def _fixed_batches(config, seed: int = 0) -> dict:
    import random

    import numpy as np
    import torch

    from drivemtl.data import build_dataset
    from drivemtl.structures.batch import collate

    dataset = build_dataset(config.data, "train")
    random.seed(seed)
    np.random.seed(seed)  # noqa: NPY002 (the transforms draw from the global state)
    torch.manual_seed(seed)
    divisor = config.data.size_divisor
    return {
        name: collate([dataset[i] for i in list(dataset.set_range(name))[:4]], divisor)
        for name in dataset.sets
    }


def _step_times(config, steps: int) -> tuple[dict[str, float], dict[str, float]]:
    """Median seconds per step on each set's fixed batch, and the first step's losses."""
    import torch

    from drivemtl.engine.loss_weighting import build_loss_weighting
    from drivemtl.engine.stages import build_optimizer
    from drivemtl.engine.step import multitask_step
    from drivemtl.models import build_model

    torch.manual_seed(0)
    model = build_model(config.model).train()
    tasks = list(config.model.tasks)
    weighting = build_loss_weighting({"type": "fixed"}, tasks, model.loss_weights, 1)
    optimizer = build_optimizer(list(model.named_parameters()), {"type": "adamw", "lr": 1e-4})
    batches = _fixed_batches(config)
    first: dict[str, float] = {}
    times: dict[str, float] = {}
    for name, batch in batches.items():
        samples = []
        for k in range(steps + 2):
            torch.manual_seed(k)  # the same RoI sampling draws in both trees
            start = time.perf_counter()
            optimizer.zero_grad(set_to_none=True)
            out = multitask_step(model, weighting, batch, tasks)
            out.total.backward()
            optimizer.step()
            samples.append(time.perf_counter() - start)
            if k == 0:
                first.update({f"{name}/{t}": float(v) for t, v in out.losses.items()})
        times[name] = statistics.median(samples[2:])
    return times, first


def _recipe_time(data_dir: Path, steps: tuple[int, int]) -> float:
    """Seconds per step of the demo recipe (two run lengths; their difference over the steps)."""
    from drivemtl.engine.trainer import run_recipe
    from drivemtl.inference.demo import DemoOptions, demo_config

    elapsed = []
    for n in steps:
        config = demo_config(DemoOptions(steps=n, progress=False), data_dir)
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            run_recipe(config, Path(tmp) / "run", progress=False)
            elapsed.append(time.perf_counter() - start)
    return (elapsed[1] - elapsed[0]) / (steps[1] - steps[0])


def child(data_dir: Path, steps: int, recipe_steps: tuple[int, int]) -> None:
    """Measure this process's `drivemtl` on the demo data in `data_dir`; print one JSON line."""
    import torch

    from drivemtl.inference.demo import DemoOptions, demo_config

    config = demo_config(DemoOptions(progress=False), data_dir)
    times, losses = _step_times(config, steps)
    result = {
        "step": times,
        "recipe": _recipe_time(data_dir, recipe_steps),
        "losses": losses,
        "threads": torch.get_num_threads(),
    }
    print(TAG + json.dumps(result), flush=True)


# -- the comparison (parent process) --------------------------------------------------------------
def _generate(data_dir: Path, frames: int) -> None:
    from drivemtl.inference.demo import DemoOptions, _generate

    _generate(DemoOptions(train_frames=frames, val_frames=2, progress=False), data_dir)


def _export(rev: str, dest: Path) -> Path:
    """The source tree of git revision `rev`, unpacked into `dest`."""
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", rev, "src"], check=True, capture_output=True
    ).stdout
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(dest, filter="data")
    return dest / "src"


def _run_child(src: Path, args: argparse.Namespace, data_dir: Path) -> dict:
    env = dict(os.environ, PYTHONPATH=str(src))
    cmd = [sys.executable, __file__, "--child", str(data_dir), "--steps", str(args.steps)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    lines = [x for x in proc.stdout.splitlines() if x.startswith(TAG)]
    if proc.returncode or not lines:
        raise SystemExit(f"measurement on {src} failed:\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1][len(TAG) :])


def _summary(runs: list[dict]) -> dict[str, tuple[float, float, float]]:
    """Per figure: median, min, max over rounds."""
    keys = [f"step {k}" for k in runs[0]["step"]] + ["recipe"]
    values = {k: [r["step"][k[5:]] if k.startswith("step ") else r["recipe"] for r in runs]
              for k in keys}  # fmt: skip
    return {k: (statistics.median(v), min(v), max(v)) for k, v in values.items()}


def compare(args: argparse.Namespace) -> None:
    """Alternate old and new trees for `rounds` rounds; print the table and the loss check."""
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp) / "data"
        _generate(data_dir, args.frames)
        trees = {"new": ROOT / "src"}
        if args.baseline:
            trees = {"old": _export(args.baseline, Path(tmp) / "old"), **trees}
        runs: dict[str, list[dict]] = {name: [] for name in trees}
        for r in range(args.rounds):
            for name, src in trees.items():
                runs[name].append(_run_child(src, args, data_dir))
                print(f"round {r + 1}/{args.rounds} {name} done", file=sys.stderr, flush=True)
    summaries = {name: _summary(v) for name, v in runs.items()}
    print(f"demo training step, CPU, {runs['new'][0]['threads']} threads, batch 4, median "
          f"(min-max) over {args.rounds} rounds, seconds per step")  # fmt: skip
    header = f"{'figure':<20}" + "".join(f"{n:>24}" for n in trees)
    print(header + ("   speed-up" if args.baseline else ""))
    for key in summaries["new"]:
        row = f"{key:<20}"
        for name in trees:
            med, lo, hi = summaries[name][key]
            row += f"{f'{med:.3f} ({lo:.3f}-{hi:.3f})':>24}"
        if args.baseline:
            row += f"   x{summaries['old'][key][0] / summaries['new'][key][0]:.2f}"
        print(row)
    if args.baseline:
        old, new = runs["old"][0]["losses"], runs["new"][0]["losses"]
        worst = max(abs(old[k] - new[k]) / max(abs(old[k]), 1e-12) for k in old)
        print(f"first-step losses, {len(old)} task terms: max relative difference {worst:.2e}")


# -- GPU figure ------------------------------------------------------------------------------------
def gpu_rate(batch: int, steps: int) -> float:
    """Images/s of the ResNet-50 image-task config at 720x1280 in bf16 (CUDA)."""
    import torch

    from drivemtl.config import load_config
    from drivemtl.data import DataConfig, build_dataset, build_transforms
    from drivemtl.data.synthetic.generator import generate_dataset
    from drivemtl.engine.loss_weighting import build_loss_weighting
    from drivemtl.engine.run_config import RunConfig
    from drivemtl.engine.stages import build_optimizer
    from drivemtl.engine.step import multitask_step
    from drivemtl.models import build_model
    from drivemtl.structures.batch import collate

    image_tasks = ("tagging", "semantic", "drivable", "lanes", "detection", "instance", "pose")
    cfg = load_config(ROOT / "configs" / "models" / "r50_fpn.yaml", RunConfig)
    tasks = [t for t in cfg.model.tasks if t in image_tasks]
    cfg.model.tasks = {t: cfg.model.tasks[t] for t in tasks}
    with tempfile.TemporaryDirectory() as tmp:
        root = generate_dataset(Path(tmp) / "syn", preset="all", num_frames=batch * 2,
                                size=(1280, 720), progress=False)  # fmt: skip
        data = DataConfig.model_validate(
            {"sets": {"all": {"root": str(root / "all"), "tasks": tasks, "categories": "ins_seg"}},
             "transforms": {"heights": [720], "max_width": 1280}}
        )  # fmt: skip
        dataset = build_dataset(data, "train", transform=build_transforms(data.transforms, False))
        samples = [dataset[i % len(dataset)] for i in range(batch)]
    batch_data = collate(samples, data.size_divisor).to("cuda")
    model = build_model(cfg.model).to("cuda").train()
    weighting = build_loss_weighting({"type": "fixed"}, tasks, model.loss_weights, 1)
    optimizer = build_optimizer(list(model.named_parameters()), {"type": "adamw", "lr": 1e-5})

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device_type="cuda", dtype=torch.bfloat16):
            out = multitask_step(model, weighting, batch_data, tasks)
        out.total.backward()
        optimizer.step()

    for _ in range(2):
        step()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    torch.cuda.synchronize()
    return batch * steps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", help="git revision to compare against (e.g. 180b834)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=12, help="timed steps per set batch")
    parser.add_argument("--frames", type=int, default=24, help="synthetic training frames")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--batch", type=int, default=2, help="GPU batch size")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.steps, (20, 60))
    elif args.device == "cuda":
        import torch

        rate = gpu_rate(args.batch, args.steps)
        print(f"cuda r50_fpn, image tasks, 720x1280, bf16, batch {args.batch}: {rate:.2f} "
              f"images/s ({torch.cuda.get_device_name()})")  # fmt: skip
    else:
        compare(args)


if __name__ == "__main__":
    main()
