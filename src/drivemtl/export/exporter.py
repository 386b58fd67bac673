"""`drivemtl export --format onnx`: the network graph, one graph per RoI head, the model card.

Export uses PyTorch's TorchScript-based ONNX exporter (`dynamo=False`): it keeps the batch and
input sizes symbolic through the traced shape arithmetic, and RoIAlign becomes the standard
ONNX `RoiAlign` node. Every graph is checked with `onnx.checker` (full check, with shape
inference) before the card is written.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from drivemtl.engine.run_config import RunConfig
from drivemtl.export.card import CARD_FORMAT, sha256_file, task_classes, write_card
from drivemtl.export.errors import ExportError
from drivemtl.export.graphs import RoIGraph, build_graphs, level_name
from drivemtl.models.heads.detector import TwoStageDetector
from drivemtl.models.multitask import MultiTaskNet

MIN_OPSET = 17  # RoiAlign's half_pixel mode needs >= 16; GroupNorm-free LayerNorm etc. >= 17
NETWORK_FILE = "network.onnx"


def _dim_names(a: Tensor, b: Tensor, sizes: tuple[tuple[int, int, int], ...]) -> dict[int, str]:
    """Symbolic names of the dims of one output that differ between the two example runs."""
    names: dict[int, str] = {}
    (b1, h1, w1), (b2, h2, w2) = sizes
    for i, (x, y) in enumerate(zip(a.shape, b.shape, strict=True)):
        if x == y:
            continue
        if i == 0 and (x, y) == (b1, b2):
            names[i] = "batch"
            continue
        for axis, (s1, s2) in (("height", (h1, h2)), ("width", (w1, w2))):
            for factor in (1, 2, 4, 8, 16, 32, 64, 128):
                if (x, y) == (s1 // factor, s2 // factor) and s1 % factor == s2 % factor == 0:
                    names[i] = axis if factor == 1 else f"{axis}/{factor}"
                    break
                if (x, y) == (math.ceil(s1 / factor), math.ceil(s2 / factor)):
                    names[i] = f"ceil({axis}/{factor})"
                    break
            if i in names:
                break
        names.setdefault(i, f"dim{i}")
    return names


def _shape(value: Tensor, names: dict[int, str]) -> list[int | str]:
    return [names.get(i, int(n)) for i, n in enumerate(value.shape)]


def _meaning(name: str, plan_detector: str | None) -> str:
    """One line saying what a network graph output is."""
    if name.startswith("pixel."):
        return f"FPN level {name.split('.')[1].upper()}: input of the RoI graphs"
    if plan_detector and name.startswith(f"{plan_detector}.rpn.objectness."):
        return "RPN objectness logits, one channel per anchor (sizes x aspect ratios)"
    if plan_detector and name.startswith(f"{plan_detector}.rpn.deltas."):
        return "RPN box deltas (dx, dy, dw, dh) per anchor, channels anchor-major"
    task, _, branch = name.partition(".")
    if branch:
        return f"raw {branch} map / logits of task {task} (before its post-processing)"
    return f"raw outputs of task {task}"


def _roi_meaning(head: Any, output: str) -> str:
    if isinstance(head, TwoStageDetector):
        if output == "class_logits":
            return f"class logits per RoI, {head.num_classes} classes then background"
        return "class-specific box deltas per RoI (weights 10, 10, 5, 5)"
    return "per-RoI logits (mask per class, or keypoint heatmaps per joint)"


def _export(module: torch.nn.Module, args: tuple, path: Path, inputs: list[str],
            outputs: list[str], axes: dict[str, dict[int, str]], opset: int) -> None:  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module, args, str(path), dynamo=False, opset_version=opset, input_names=inputs,
            output_names=outputs, dynamic_axes=axes, do_constant_folding=True,
        )  # fmt: skip


def export_onnx(
    model: MultiTaskNet,
    config: RunConfig,
    out_dir: Path,
    checkpoint: Path | None = None,
    opset: int = MIN_OPSET,
) -> Path:
    """Export `model` (loaded from `checkpoint`) to `out_dir`; returns the model card's path.

    Raises ExportError naming the head / stage that cannot be exported.
    """
    import onnx

    from drivemtl import __version__

    if opset < MIN_OPSET:
        raise ExportError(f"--opset {opset}: the export needs opset >= {MIN_OPSET}")
    model = model.eval()
    plan, network, roi_graphs = build_graphs(model)
    transforms = config.data.transforms if config.data is not None else None
    divisor = config.data.size_divisor if config.data is not None else 32
    # Heights and widths whose ratios differ, so that every output dim gets one symbolic name.
    sizes = ((1, 2 * divisor, 5 * divisor), (2, 3 * divisor, 7 * divisor))
    generator = torch.Generator().manual_seed(0)
    examples = [torch.randn(b, 3, h, w, generator=generator) for b, h, w in sizes]
    with torch.no_grad():
        first, second = (network.named_outputs(x) for x in examples)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    axes = {"images": {0: "batch", 2: "height", 3: "width"}}
    out_axes = {n: _dim_names(first[n], second[n], sizes) for n in first}
    _export(network, (examples[0],), out_dir / NETWORK_FILE, ["images"], list(first),
            {**axes, **out_axes}, opset)  # fmt: skip
    graphs: dict[str, Any] = {
        "network": {
            "file": NETWORK_FILE,
            "inputs": [
                {
                    "name": "images",
                    "shape": ["batch", 3, "height", "width"],
                    "dtype": "float32",
                    "meaning": f"normalised RGB images, NCHW, padded to a multiple of {divisor}",
                }
            ],
            "outputs": [
                {
                    "name": n,
                    "shape": _shape(v, out_axes[n]),
                    "dtype": "float32",
                    "meaning": _meaning(n, plan.detector),
                }
                for n, v in first.items()
            ],
        }
    }
    for name, graph in roi_graphs.items():
        graphs[name] = _export_roi(name, graph, first, out_dir, opset)
        graphs[name]["role"] = "box head on the RPN proposals" if name == plan.detector else (
            "RoI head on the detections of its classes")  # fmt: skip
    for entry in graphs.values():
        onnx.checker.check_model(str(out_dir / entry["file"]), full_check=True)
    card = {
        "format": CARD_FORMAT,
        "drivemtl_version": __version__,
        "opset": opset,
        "exporter": f"torch {torch.__version__} (TorchScript-based, dynamo=False)",
        "graphs": graphs,
        "runtime": {
            "order": ["network", *plan.roi_graphs()],
            "outside_the_graphs": "RPN anchors, top-k, decoding and NMS; detection score "
            "threshold, class-aware NMS and top-k; RoI selection per head; task post-processing",
            "rois": "[R, 5] rows (batch index, x1, y1, x2, y2) in padded-input pixels",
        },
        "input": {
            "layout": "NCHW",
            "color": "RGB",
            "dtype": "float32",
            "scale": "pixel values 0..255, then (x - mean) / std",
            "mean": list(transforms.mean) if transforms is not None else [123.675, 116.28, 103.53],
            "std": list(transforms.std) if transforms is not None else [58.395, 57.12, 57.375],
            "size_divisor": divisor,
        },
        "tasks": {n: task_classes(t) for n, t in model.tasks.items()},
        "weights_sha256": sha256_file(checkpoint) if checkpoint is not None else None,
        "config": config.model_dump(mode="json"),
    }
    return write_card(out_dir, card)


def _export_roi(
    name: str, graph: RoIGraph, first: dict[str, Tensor], out_dir: Path, opset: int
) -> dict[str, Any]:
    """Export one RoI graph with example boxes on the first example's levels."""
    maps = {s: first[level_name(s)] for s in graph.strides}
    height = int(maps[graph.strides[0]].shape[-2]) * graph.strides[0]
    width = int(maps[graph.strides[0]].shape[-1]) * graph.strides[0]
    rois = torch.tensor(
        [[0, 1.0, 2.0, width / 3, height / 2], [0, 0.0, 0.0, width - 1.0, height - 1.0]]
    )
    with torch.no_grad():
        outputs = graph.named_outputs(maps, rois)
    file = f"{name}_roi.onnx"
    axes: dict[str, dict[int, str]] = {"rois": {0: "rois"}}
    for s in graph.strides:
        axes[level_name(s)] = {0: "batch", 2: f"ceil(height/{s})", 3: f"ceil(width/{s})"}
    for out in graph.output_names:
        axes[out] = {0: "rois"}
    args = (*[maps[s] for s in graph.strides], rois)
    _export(graph, args, out_dir / file, graph.input_names, graph.output_names, axes, opset)
    inputs = [
        {"name": level_name(s), "shape": ["batch", int(maps[s].shape[1]), f"ceil(height/{s})",
                                          f"ceil(width/{s})"],
         "dtype": "float32", "meaning": f"network output {level_name(s)}"}
        for s in graph.strides
    ]  # fmt: skip
    inputs.append({"name": "rois", "shape": ["rois", 5], "dtype": "float32",
                   "meaning": "batch index, x1, y1, x2, y2 in padded-input pixels"})  # fmt: skip
    return {
        "file": file,
        "inputs": inputs,
        "outputs": [
            {
                "name": n,
                "shape": ["rois", *[int(d) for d in v.shape[1:]]],
                "dtype": "float32",
                "meaning": _roi_meaning(graph.head, n),
            }
            for n, v in outputs.items()
        ],
    }
