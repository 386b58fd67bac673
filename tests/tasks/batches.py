"""Tiny synthetic batches and networks shared by the task and model tests.

The images are smooth random noise plus the drawn objects, so the targets are learnable from the
pixels; every task's target is present on every sample unless `tasks` says otherwise.
"""

from __future__ import annotations

import torch

from drivemtl.models.config import ModelConfig, TaskConfig
from drivemtl.structures.batch import Batch, collate
from drivemtl.structures.bdd import POSE_JOINTS
from drivemtl.structures.instances import Instances
from drivemtl.structures.sample import Sample, SampleMeta

ALL_TASKS = (
    "tagging", "semantic", "drivable", "lanes", "detection", "instance", "pose", "depth",
    "normals", "edges",
)  # fmt: skip
HEIGHT, WIDTH = 64, 96

# Narrow heads so that a model with every task trains in seconds on a CPU.
TINY_HEADS: dict[str, dict] = {
    "tagging": {},
    "semantic": {"channels": 16},
    "drivable": {"channels": 16},
    "lanes": {"channels": 16},
    "depth": {"channels": 16},
    "normals": {"channels": 16},
    "edges": {"channels": 16},
    "detection": {
        "rpn": {
            "anchor_sizes": [8, 16, 32, 64, 128],
            "pre_nms_topk_train": 200,
            "pre_nms_topk_test": 100,
            "post_nms_topk_train": 64,
            "post_nms_topk_test": 32,
            "batch_size_per_image": 64,
        },
        "roi": {"batch_size_per_image": 32, "fc_dim": 64, "detections_per_image": 20},
    },
    "instance": {"channels": 16, "num_convs": 2},
    "pose": {"channels": 16, "num_convs": 2},
}
TINY_HEADS["instance"]["detector"] = TINY_HEADS["detection"]
TINY_HEADS["pose"]["detector"] = TINY_HEADS["detection"]


def tiny_config(tasks: tuple[str, ...] = ALL_TASKS, **head_overrides: dict) -> ModelConfig:
    """A ResNet-18 (width 8) + 16-channel FPN model config with the given tasks."""
    return ModelConfig(
        backbone={"type": "resnet18", "width": 8, "norm": "gn"},
        neck={"type": "fpn", "out_channels": 16, "norm": "gn"},
        tasks={t: TaskConfig(head={**TINY_HEADS[t], **head_overrides.get(t, {})}) for t in tasks},
    )


def _sample(index: int, tasks: frozenset[str], flipped: bool = False) -> Sample:
    g = torch.Generator().manual_seed(index)
    h, w = HEIGHT, WIDTH
    image = torch.rand((3, h, w), generator=g) * 0.2
    # Two objects: a person-like box (class 0) and a car-like box (class 2).
    boxes = torch.tensor(
        [[8.0 + 4 * index, 10.0, 28.0 + 4 * index, 54.0], [50.0, 30.0, 90.0, 58.0]]
    )
    classes = torch.tensor([0, 2])
    masks = torch.zeros((2, h, w), dtype=torch.bool)
    for k, (x1, y1, x2, y2) in enumerate(boxes.int().tolist()):
        masks[k, y1 + 2 : y2 - 2, x1 + 2 : x2 - 2] = True
    image[0][masks[0]] = 1.0
    image[2][masks[1]] = 1.0
    keypoints = torch.zeros((2, len(POSE_JOINTS), 3))
    x1, y1, x2, y2 = boxes[0].tolist()
    for j in range(len(POSE_JOINTS)):
        keypoints[0, j] = torch.tensor(
            [x1 + (x2 - x1) * (0.25 + 0.5 * (j % 2)), y1 + (y2 - y1) * (j + 0.5) / 18, 2.0]
        )
    track_ids = torch.tensor([1, 2])
    instances = Instances(boxes, classes, track_ids, masks=masks, keypoints=keypoints)
    yy = torch.arange(h).view(h, 1).expand(h, w)
    xx = torch.arange(w).view(1, w).expand(h, w)
    semantic = torch.where(yy > h // 2, 0, 10)  # road below, sky above
    semantic = torch.where(masks[1], 13, torch.where(masks[0], 11, semantic))
    drivable = torch.where(yy > h // 2, torch.where(xx < w // 2, 0, 1), 2)
    lanes = torch.zeros((3, h, w), dtype=torch.int64)
    stripe = (xx % 24 < 3) & (yy > h // 2)
    lanes[0][stripe] = 7
    lanes[1][stripe] = 1
    lanes[2][stripe] = 2
    image[1][stripe] = 1.0
    depth = (5.0 + yy.float()).flip(0)  # 5 m at the bottom to 68 m at the top
    normals = torch.zeros((3, h, w))
    normals[1] = torch.where(yy > h // 2, -1.0, 0.0)
    normals[2] = torch.where(yy > h // 2, 0.0, -1.0)
    edges = ((semantic[1:, :] != semantic[:-1, :]).float()).long()
    edges = torch.cat((edges, torch.zeros((1, w), dtype=torch.int64)))
    return Sample(
        image=image,
        meta=SampleMeta(
            name=f"img/{index:04d}.jpg",
            image_set="test",
            orig_size=(h, w),
            image_size=(h, w),
            flipped=flipped,
        ),
        tasks=tasks,
        instances=instances,
        semantic=semantic,
        drivable=drivable,
        lanes=lanes,
        depth=depth,
        normals=normals,
        edges=edges,
        tags=torch.tensor([2, 4, index % 2]),
    )


def make_batch(
    size: int = 2, tasks: tuple[str, ...] = ALL_TASKS, labeled: list[bool] | None = None
) -> Batch:
    """`size` samples; sample i is labelled for `tasks` when labeled[i] (default: all)."""
    labeled = labeled if labeled is not None else [True] * size
    samples = [_sample(i, frozenset(tasks) if labeled[i] else frozenset()) for i in range(size)]
    return collate(samples)


def overfit(task: str, steps: int = 40, lr: float = 3e-3, seed: int = 0) -> tuple[float, float]:
    """Train a tiny single-task model on one fixed batch; (first loss, best of the last 5).

    Runs single-threaded (restored afterwards): tiny ops are faster without thread hand-offs.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _overfit(task, steps, lr, seed)
    finally:
        torch.set_num_threads(threads)


def _overfit(task: str, steps: int, lr: float, seed: int) -> tuple[float, float]:
    from drivemtl.models import build_model

    torch.manual_seed(seed)
    model = build_model(tiny_config((task,)))
    model.train()
    batch = make_batch(2, (task,))
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    history = []
    for _ in range(steps):
        loss = model.losses(batch)[task]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        history.append(float(loss.detach()))
    return history[0], min(history[-5:])
