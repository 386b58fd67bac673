"""Training throughput (images/s) of one multi-task step: forward, backward and AdamW update.

CPU: the tiny config (configs/models/tiny.yaml) with every image task at 192x320.
GPU (when CUDA is available): ResNet-50-FPN (configs/models/r50_fpn.yaml) with all image tasks at
720x1280 in bf16 autocast. Frames come from the synthetic world (preset `all`, every label), are
decoded once and reused, so the figure is the model's step rate, not the data loader's.

    python benchmarks/train_speed.py [--steps 10] [--batch 2] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

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

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "models"
IMAGE_TASKS = ("tagging", "semantic", "drivable", "lanes", "detection", "instance", "pose")


def measure(
    model_yaml: str, size_wh: tuple[int, int], device: str, batch: int, steps: int
) -> float:
    """Images/s over `steps` timed training steps (after two warm-up steps)."""
    cfg = load_config(CONFIGS / model_yaml, RunConfig)
    tasks = [t for t in cfg.model.tasks if t in IMAGE_TASKS]
    cfg.model.tasks = {t: cfg.model.tasks[t] for t in tasks}
    with tempfile.TemporaryDirectory() as tmp:
        root = generate_dataset(
            Path(tmp) / "syn", preset="all", num_frames=batch * 2, size=size_wh, progress=False
        )
        data = DataConfig.model_validate(
            {"sets": {"all": {"root": str(root / "all"), "tasks": tasks, "categories": "ins_seg"}},
             "transforms": {"heights": [size_wh[1]], "max_width": size_wh[0]}}
        )  # fmt: skip
        dataset = build_dataset(data, "train", transform=build_transforms(data.transforms, False))
        samples = [dataset[i % len(dataset)] for i in range(batch)]
    batch_data = collate(samples, data.size_divisor).to(device)
    model = build_model(cfg.model).to(device).train()
    weighting = build_loss_weighting({"type": "fixed"}, tasks, model.loss_weights, 1)
    optimizer = build_optimizer(list(model.named_parameters()), {"type": "adamw", "lr": 1e-5})
    dtype = torch.bfloat16 if device == "cuda" else torch.float32

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device_type=device, dtype=dtype, enabled=device == "cuda"):
            out = multitask_step(model, weighting, batch_data, tasks)
        out.total.backward()
        optimizer.step()

    for _ in range(2):
        step()
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device == "cuda":
        torch.cuda.synchronize()
    return batch * steps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--device", choices=["cpu", "cuda"], default=None)
    args = parser.parse_args()
    devices = (
        [args.device] if args.device else ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    )
    for device in devices:
        if device == "cpu":
            rate = measure("tiny.yaml", (320, 192), "cpu", args.batch, args.steps)
            print(f"cpu  tiny, image tasks, 192x320, fp32, batch {args.batch}: {rate:.2f} images/s "
                  f"({torch.get_num_threads()} threads)")  # fmt: skip
        else:
            rate = measure("r50_fpn.yaml", (1280, 720), "cuda", args.batch, args.steps)
            name = torch.cuda.get_device_name()
            print(f"cuda r50_fpn, image tasks, 720x1280, bf16, batch {args.batch}: {rate:.2f} "
                  f"images/s ({name})")  # fmt: skip


if __name__ == "__main__":
    main()
