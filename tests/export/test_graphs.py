"""The export plan: which heads go into which graph, and heads / stages that are refused."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from drivemtl.engine.run_config import RunConfig
from drivemtl.export.errors import ExportError
from drivemtl.export.graphs import build_graphs, level_name, plan_export
from drivemtl.models import build_model
from drivemtl.models.multitask import MultiTaskNet
from drivemtl.structures.batch import collate
from drivemtl.structures.sample import Sample, SampleMeta


def test_plan_puts_box_mask_and_keypoint_heads_in_roi_graphs(tiny_export):
    model = tiny_export[2]
    plan = plan_export(model)
    assert plan.detector == "detection" and plan.roi_heads == ["instance", "pose"]
    assert plan.roi_graphs() == ["detection", "instance", "pose"]
    assert plan.levels == (4, 8, 16, 32) and level_name(16) == "pixel.p4"


def test_network_graph_outputs_equal_the_model_forward(tiny_export):
    model = tiny_export[2]
    _, network, _ = build_graphs(model)
    image = torch.randn(3, 64, 96, generator=torch.Generator().manual_seed(3))
    meta = SampleMeta(name="a.png", image_set="t", orig_size=(64, 96), image_size=(64, 96))
    batch = collate([Sample(image=image, meta=meta)], 32)
    with torch.no_grad():
        named = network.named_outputs(batch.images)
        ref = model(batch, targets=False)
    assert torch.equal(named["semantic.logits"], ref["semantic"]["logits"])
    assert torch.equal(named["tagging.scene"], ref["tagging"]["scene"])
    flat = named["detection.rpn.objectness.p3"].permute(0, 2, 3, 1).reshape(1, -1)
    assert torch.equal(flat, ref["detection"].rpn.objectness[1])


class _ObjectMixer(nn.Module):
    """An interaction block on the object stream (like VTDNet's RoI attention)."""

    needs = ("objects",)
    modifies = ("objects",)

    def forward(self, features):  # pragma: no cover - never run
        return None


def test_a_stage_on_the_object_stream_is_refused(tmp_path, make_config):
    tasks = {"detection": {"head": {"roi": {"fc_dim": 16}}}, "instance": {"head": {"channels": 8}}}
    config = RunConfig.model_validate(make_config(tmp_path, tasks))
    base = build_model(config.model)
    model = MultiTaskNet(
        base.backbone, base.neck, base.tasks, base.support, heads=dict(base.heads),
        interactions=[_ObjectMixer()], support_owner=base.support_owner,
    )  # fmt: skip
    with pytest.raises(ExportError, match=r"model\.interactions\.0 \(interaction\) cannot be "
                       r"exported: it works on the object stream"):  # fmt: skip
        plan_export(model)
