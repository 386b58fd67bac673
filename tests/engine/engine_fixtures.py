"""Helpers of the engine tests: a tiny two-set dataset in the canonical layout (semantic PNGs / tagging JSON) and a config.

Written here so the engine tests need nothing but the BDD100K reader: set `seg` is labelled for
semantic segmentation (bitmask PNGs), set `tag` for image tagging (frame attributes in JSON).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import cv2
import lightning as L
import numpy as np
import torch

from drivemtl.config.loader import validate_tree
from drivemtl.engine.checkpoint import load_weights
from drivemtl.engine.run_config import RunConfig
from drivemtl.structures.bdd import SCENE, TIMEOFDAY, WEATHER

H, W = 64, 96


def _write_set(root: Path, name: str, frames: int, seed: int, semantic: bool) -> None:
    rng = np.random.default_rng(seed)
    labels = []
    for i in range(frames):
        rel = f"img/{name}{i:03d}.jpg"
        image = rng.integers(0, 255, (H, W, 3), dtype=np.uint8)
        (root / name / "images" / "img").mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(root / name / "images" / rel), image)
        if semantic:
            mask = np.zeros((H, W), np.uint8)
            mask[: H // 2] = 10  # sky above, road below: learnable from the image rows
            mask[H // 2 :] = 0
            (root / name / "masks" / "semantic" / "img").mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(root / name / "masks" / "semantic" / rel.replace(".jpg", ".png")), mask)
        labels.append(
            {
                "name": rel,
                "attributes": {
                    "weather": WEATHER[i % 3],
                    "scene": SCENE[i % 2],
                    "timeofday": TIMEOFDAY[i % 2],
                },
                "labels": [],
            }
        )
    if not semantic:
        (root / name / "labels.json").write_text(json.dumps(labels))


def write_tiny_data(root: Path) -> Path:
    """Write the two-set dataset (8 frames each) under `root`."""
    _write_set(root, "seg", 8, seed=1, semantic=True)
    _write_set(root, "tag", 8, seed=2, semantic=False)
    return root


def tiny_model() -> dict[str, Any]:
    """A very narrow two-task network (fast on CPU)."""
    return {
        "backbone": {"type": "resnet18", "width": 8, "norm": "bn"},
        "neck": {"type": "fpn", "out_channels": 16, "norm": "gn"},
        "tasks": {"semantic": {"head": {"channels": 16}}, "tagging": {}},
    }


def make_config(
    data_root: Path,
    stages: list[dict[str, Any]],
    model: dict[str, Any] | None = None,
    **train: Any,
) -> RunConfig:
    """A RunConfig over `tiny_data` with the given recipe stages (model: `tiny_model()`)."""
    tree = {
        "name": "tiny",
        "seed": 3,
        "model": model if model is not None else tiny_model(),
        "data": {
            "sets": {
                "seg": {"root": str(data_root / "seg"), "tasks": ["semantic"]},
                "tag": {"root": str(data_root / "tag"), "tasks": ["tagging"]},
            },
            "transforms": {"heights": [H], "flip": 0.5},
        },
        "recipe": {"stages": stages},
        "train": {"accelerator": "cpu", "log_every_n_steps": 1, **train},
    }
    return validate_tree(tree, {}, RunConfig, "<test>")


class SimulatedKill(RuntimeError):
    pass


class KillAt(L.Callback):
    """Crash the run when stage `stage` is about to train its batch number `batch` (0-based)."""

    def __init__(self, stage: str, batch: int) -> None:
        self.stage, self.batch = stage, batch

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if pl_module.settings.name == self.stage and batch_idx == self.batch:
            raise SimulatedKill(f"killed in {self.stage} before batch {batch_idx}")


def same_weights(a: Path, b: Path) -> None:
    """Assert two weights files hold bit-identical tensors under the same names."""
    wa, wb = load_weights(a), load_weights(b)
    assert wa.keys() == wb.keys()
    different = [k for k in wa if not torch.equal(wa[k], wb[k])]
    assert not different, f"{len(different)} tensors differ, e.g. {different[:3]}"
