"""The shared runtime on the PyTorch graphs gives exactly the PyTorch predictor's predictions:
splitting the network into graphs + runtime changes nothing."""

from __future__ import annotations

import torch

from drivemtl.export.graphs import build_graphs
from drivemtl.export.runtime import ExportedRuntime, TorchGraphs

from .batches import make_batch


def test_torch_graphs_with_the_runtime_equal_predict_with_state(tiny_export):
    model = tiny_export[2]
    plan, network, rois = build_graphs(model)
    runtime = ExportedRuntime(model, TorchGraphs(network, rois), plan)
    batch = make_batch([(64, 96), (60, 90)], seed=2)
    ref, _ = model.predict_with_state(batch, None)
    got, state = runtime.predict(batch, None)
    assert state is not None and len(got) == 2
    assert sum(len(r.poses.boxes) for r in ref) > 0
    for r, g in zip(ref, got, strict=True):
        for field in ("semantic", "semantic_confidence", "depth", "lanes", "tags"):
            a, b = getattr(r, field), getattr(g, field)
            assert (a is None and b is None) or torch.equal(a, b), field
        for field in ("detections", "instances", "poses"):
            a, b = getattr(r, field), getattr(g, field)
            if a is None:
                assert b is None, field
                continue
            assert torch.equal(a.boxes, b.boxes) and torch.equal(a.scores, b.scores), field
        assert torch.equal(r.instances.masks, g.instances.masks)
        assert torch.equal(r.poses.keypoints, g.poses.keypoints)
