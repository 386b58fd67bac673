"""A tiny ten-task model exported once per session, shared by the export tests."""

from __future__ import annotations

import pytest
import torch
import yaml

from drivemtl.engine.checkpoint import save_weights
from drivemtl.engine.run_config import load_run_config
from drivemtl.models import build_model
from drivemtl.structures.bdd import THING_CLASSES

# Every image task of configs/models/tiny.yaml, narrower; pose on every thing class so that the
# keypoint graph gets RoIs even from an untrained detector.
TASKS = {
    "tagging": {},
    "semantic": {"head": {"channels": 16}},
    "drivable": {"head": {"channels": 16}},
    "lanes": {"head": {"channels": 16}},
    "detection": {
        "head": {
            "rpn": {
                "anchor_sizes": [16, 32, 64, 128, 256],
                "pre_nms_topk_test": 100,
                "post_nms_topk_test": 40,
            },
            "roi": {"fc_dim": 32, "detections_per_image": 12},
        }
    },
    "instance": {"head": {"channels": 16, "num_convs": 1}},
    "pose": {"head": {"channels": 16, "num_convs": 1, "person_classes": list(THING_CLASSES)}},
    "depth": {"head": {"channels": 16}},
    "normals": {"head": {"channels": 16}},
    "edges": {"head": {"channels": 16}},
}


def tiny_config(root, tasks=None) -> dict:
    """The tiny run config (as a dict) with its data root under `root`."""
    return {
        "model": {
            "backbone": {"type": "resnet18", "width": 8},
            "neck": {"out_channels": 16},
            "tasks": tasks if tasks is not None else TASKS,
        },
        "data": {
            "sets": {"s": {"root": str(root), "tasks": ["semantic"]}},
            "transforms": {"heights": [64]},
        },
    }


def spread_scores(model: torch.nn.Module) -> None:
    """Give the untrained detector distinct scores: RPN objectness, class and mask logits drawn
    wide (std 0.5, not 0.01), so that top-k, NMS and mask thresholds have no near-ties."""
    generator = torch.Generator().manual_seed(1)
    detector = model.heads["detection"]
    layers = (
        detector.rpn.objectness,
        detector.box_head.cls_score,
        model.heads["instance"].predictor,
    )
    for layer in layers:
        with torch.no_grad():
            layer.weight.copy_(torch.randn(layer.weight.shape, generator=generator) * 0.5)


@pytest.fixture(scope="session")
def tiny_export(tmp_path_factory):
    """(config path, weights path, loaded model, export folder) of the tiny model."""
    from drivemtl.export.exporter import export_onnx

    root = tmp_path_factory.mktemp("export")
    path = root / "cfg.yaml"
    path.write_text(yaml.safe_dump(tiny_config(root)))
    config = load_run_config(path)
    torch.manual_seed(0)
    model = build_model(config.model)
    spread_scores(model)
    weights = save_weights(model, root / "w.safetensors")
    model.eval()
    folder = root / "onnx"
    export_onnx(model, config, folder, checkpoint=weights)
    return path, weights, model, folder


@pytest.fixture
def make_config():
    """`tiny_config(root, tasks)`: the tiny run config dict with other tasks."""
    return tiny_config
