"""ONNX export of the tiny ten-task model: valid graphs, dynamic shapes, onnxruntime parity with
the PyTorch forward (every raw output) and with the PyTorch predictions (boxes, class maps)."""

from __future__ import annotations

import json

import onnx
import pytest
import torch

from drivemtl.engine.run_config import load_run_config
from drivemtl.export.card import CARD_NAME
from drivemtl.export.runtime import ExportedRuntime, OnnxGraphs, runtime_model
from drivemtl.models.heads.detector import DetectionOutputs
from drivemtl.models.heads.mask_head import RoIHeadOutputs
from drivemtl.models.multitask import finish_predictions

from .batches import make_batch

RAW_TOL = 1e-4  # max abs difference of raw outputs (float32)
BOX_TOL = 1e-3  # pixels, for boxes decoded from those outputs
# batch 1 and 2 at two padded input sizes; the second image of the pair is smaller than the pad
SIZES = [[(64, 128)], [(96, 160), (90, 150)]]


@pytest.fixture(scope="module")
def onnx_runtime(tiny_export):
    """The ONNX graphs with the runtime on a fresh, weight-less build of the config."""
    config_path, _, _, folder = tiny_export
    card = json.loads((folder / CARD_NAME).read_text())
    files = {name: entry["file"] for name, entry in card["graphs"].items()}
    config = load_run_config(config_path)
    return ExportedRuntime(runtime_model(config.model), OnnxGraphs(folder, files))


def test_graphs_pass_the_checker_with_opset_17_and_symbolic_sizes(tiny_export):
    folder = tiny_export[3]
    card = json.loads((folder / CARD_NAME).read_text())
    assert set(card["graphs"]) == {"network", "detection", "instance", "pose"}
    for entry in card["graphs"].values():
        proto = onnx.load(str(folder / entry["file"]))
        onnx.checker.check_model(proto, full_check=True)
        assert max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) >= 17
    network = onnx.load(str(folder / "network.onnx"))
    dims = network.graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in dims] == ["batch", 3, "height", "width"]
    roi = onnx.load(str(folder / "detection_roi.onnx"))
    assert "RoiAlign" in {node.op_type for node in roi.graph.node}
    assert [i.name for i in roi.graph.input][-1] == "rois"


def _raw_pairs(ref, got):
    """(name, PyTorch value, onnxruntime value, is_box) for every raw output of every head."""
    for name, value in ref.items():
        other = got[name]
        if isinstance(value, dict):
            for key in value:
                yield f"{name}.{key}", value[key], other[key], False
        elif isinstance(value, DetectionOutputs):
            for level, (a, b) in enumerate(
                zip(value.rpn.objectness, other.rpn.objectness, strict=True)
            ):
                yield f"{name}.objectness{level}", a, b, False
            for level, (a, b) in enumerate(zip(value.rpn.deltas, other.rpn.deltas, strict=True)):
                yield f"{name}.rpn_deltas{level}", a, b, False
            for i, (a, b) in enumerate(zip(value.rpn.proposals, other.rpn.proposals, strict=True)):
                yield f"{name}.proposals{i}", a, b, True
            yield f"{name}.class_logits", value.class_logits, other.class_logits, False
            yield f"{name}.box_deltas", value.box_deltas, other.box_deltas, False
            for i, (a, b) in enumerate(zip(value.scores, other.scores, strict=True)):
                yield f"{name}.scores{i}", a, b, False
        elif isinstance(value, RoIHeadOutputs):
            yield f"{name}.logits", value.logits, other.logits, False
            for i, (a, b) in enumerate(zip(value.boxes, other.boxes, strict=True)):
                yield f"{name}.boxes{i}", a, b, True
        else:
            yield name, value, other, False


@pytest.mark.parametrize("sizes", SIZES, ids=["b1-64x128", "b2-96x160"])
def test_raw_outputs_and_predictions_match_pytorch(tiny_export, onnx_runtime, sizes):
    """Every raw output within RAW_TOL of the PyTorch forward, then the predictions that the
    PyTorch path makes of its outputs against those of the ONNX outputs."""
    model = tiny_export[2]
    batch = make_batch(sizes)
    with torch.no_grad():
        ref = model(batch, targets=False)
    got, graph_outputs = onnx_runtime.raw_outputs(batch)
    assert graph_outputs["semantic.logits"].shape == (len(sizes), 19, *batch.images.shape[-2:])
    pixel = dict(zip(model.spec.strides, ref.features.pixel, strict=True))
    for stride in (4, 8, 16, 32):
        level = f"pixel.p{stride.bit_length() - 1}"
        assert (graph_outputs[level] - pixel[stride]).abs().max() <= RAW_TOL
    assert set(got) == set(ref.heads)
    checked = 0
    for name, a, b, is_box in _raw_pairs(ref.heads, got):
        assert a.shape == b.shape, name
        if a.numel():
            diff = float((a.float() - b.float()).abs().max())
            assert diff <= (BOX_TOL if is_box else RAW_TOL), f"{name}: max abs diff {diff}"
            checked += 1
    assert checked >= 25
    assert sum(len(b) for b in ref["pose"].boxes) > 0 and ref["instance"].logits.shape[0] > 0
    tasks = model.task_names
    expected, _ = finish_predictions(model.tasks, ref, batch, None, tasks)
    predicted, _ = finish_predictions(onnx_runtime.model.tasks, got, batch, None, tasks)
    for r, g in zip(expected, predicted, strict=True):
        assert len(r.detections.boxes) > 0
        assert torch.equal(r.detections.classes, g.detections.classes)
        assert (r.detections.boxes - g.detections.boxes).abs().max() <= BOX_TOL
        assert (r.detections.scores - g.detections.scores).abs().max() <= RAW_TOL
        for field in ("semantic", "drivable", "lanes"):  # class maps: identical
            assert torch.equal(getattr(r, field), getattr(g, field)), field
        assert torch.equal(r.tags, g.tags)
        assert torch.equal(r.instances.classes, g.instances.classes)
        assert torch.equal(r.instances.masks, g.instances.masks)
        assert (r.poses.keypoints - g.poses.keypoints).abs().max() <= BOX_TOL
        assert (r.depth - g.depth).abs().max() <= 1e-3
        assert (r.normals - g.normals).abs().max() <= RAW_TOL
        assert (r.edges - g.edges).abs().max() <= RAW_TOL


def test_runtime_predict_equals_the_pytorch_predictor(tiny_export, onnx_runtime):
    """`ExportedRuntime.predict` (what `predict --onnx` calls) against `predict_with_state`."""
    model = tiny_export[2]
    batch = make_batch(SIZES[1], seed=1)
    ref, _ = model.predict_with_state(batch, None, ["semantic", "pose"])
    got, _ = onnx_runtime.predict(batch, None, ["semantic", "pose"])
    for r, g in zip(ref, got, strict=True):
        assert r.detections is None and g.detections is None  # only the asked tasks
        assert torch.equal(r.semantic, g.semantic)
        assert len(r.poses.boxes) > 0
        assert (r.poses.keypoints - g.poses.keypoints).abs().max() <= BOX_TOL
