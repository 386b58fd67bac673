"""The `flow` task: registration and defaults, labelled by reference frames (not flow labels),
a tiny model trained a few steps on clips of the synthetic tracking set, flow predictions at the
original size (the reference stream is built at inference too), and `evaluate_model` reporting
EPE / Fl-all on synthetic clips with exact flow labels."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from drivemtl.config.loader import validate_tree
from drivemtl.data import DataConfig, build_dataset
from drivemtl.data.synthetic import generate_dataset
from drivemtl.engine.run_config import RunConfig
from drivemtl.evaluation.model_eval import evaluate_model
from drivemtl.models import build_model
from drivemtl.models.config import ModelConfig, TaskConfig
from drivemtl.structures.batch import collate
from drivemtl.structures.sample import SampleMeta
from drivemtl.tasks import TASKS
from drivemtl.tasks.flow import flow_to_original

TINY = {"strides": [16, 8, 4], "decoder_widths": [8, 8], "context_widths": [8, 8],
        "context_dilations": [1, 2]}  # fmt: skip


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def roots(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("flow")
    return {
        "tracking": generate_dataset(base / "bdd", "bdd-sets", num_frames=12, size=(96, 64),
                                     seed=0, progress=False) / "tracking",
        "all": generate_dataset(base / "all", "all", num_frames=8, size=(96, 64), seed=1,
                                progress=False) / "all",
    }  # fmt: skip


def _model() -> ModelConfig:
    return ModelConfig(
        backbone={"type": "resnet18", "width": 8, "norm": "gn"},
        neck={"type": "fpn", "out_channels": 16, "norm": "gn"},
        tasks={"flow": TaskConfig(head=TINY)},
    )


def test_task_is_registered_with_the_pwc_head() -> None:
    task = TASKS.get("flow")()
    assert task.default_head == "pwc_flow" and task.group == "association"
    o = task.options
    assert (o.census_weight, o.smooth_weight, o.edge_constant) == (1.0, 4.0, 150.0)
    assert o.max_displacement == 4 and o.strides == [32, 16, 8, 4]
    assert o.decoder_widths == [128, 128, 96, 64, 32] and o.context_dilations == [1, 2, 4, 8, 16, 1]
    assert o.occlusion == "range_map" and o.census_radius == 3 and o.smoothness_stride == 2


def test_flow_back_to_the_original_image() -> None:
    flow = torch.zeros(2, 8, 12)
    flow[0], flow[1] = 2.0, -1.0
    meta = SampleMeta("f", "s", orig_size=(16, 24), scale=(0.5, 0.5), flipped=True)
    out = flow_to_original(torch.cat((flow, torch.full((2, 8, 4), 9.0)), dim=2), meta, (8, 12))
    assert out.shape == (2, 16, 24)
    torch.testing.assert_close(out[0], torch.full((16, 24), -4.0))  # flip negates, x2 resize
    torch.testing.assert_close(out[1], torch.full((16, 24), -2.0))


def test_a_tiny_model_trains_on_clips_and_predicts_flow(roots: dict[str, Path]) -> None:
    data = DataConfig(sets={"tracking": {"root": str(roots["tracking"]), "tasks": ["mot"],
                                         "clip": {"length": 2}}},
                      transforms={"resize": False, "flip": 0.0})  # fmt: skip
    dataset = build_dataset(data, "train")
    torch.manual_seed(0)
    net = build_model(_model())
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-3)
    batch = collate([dataset[0], dataset[1]])
    assert batch.reference is not None and net.tasks["flow"].labeled(batch).all()
    assert not batch.is_labeled("flow").any()  # no flow labels needed
    net.train()
    for _ in range(3):
        losses = net.losses(batch)
        value = float(losses["flow"].detach())
        assert math.isfinite(value) and value > 0
        optimizer.zero_grad()
        losses["flow"].backward()
        head = net.heads["flow"]
        assert head.decoders[0].flow.weight.grad.abs().sum() > 0
        assert head.context.net[-1].weight.grad.abs().sum() > 0
        assert net.backbone.parameters().__next__().grad is not None
        optimizer.step()
    net.eval()
    with torch.no_grad():  # the reference stream is built at inference for the flow head
        assert net(collate([dataset[2]]), targets=False).features.reference is not None
    predictions, _ = net.predict_with_state(collate([dataset[2]]), None)
    flow = predictions[0].flow
    assert flow is not None and flow.shape == (2, *dataset[2].meta.orig_size)
    assert torch.isfinite(flow).all()
    # A frame read alone has no reference: no flow, and no reference stream built.
    alone = collate([dataset[2]])
    alone.references = []
    assert net.predict(alone)[0].flow is None
    # Unlabelled (a still frame's copy as reference): an exact zero without gradient.
    still = collate([dataset[0]])
    still.references[0].metas = [replace(m) for m in still.metas]
    net.train()
    loss = net.losses(still)["flow"]
    assert loss.item() == 0.0 and not loss.requires_grad


def test_evaluate_model_reports_epe_and_fl_all(roots: dict[str, Path], tmp_path: Path) -> None:
    data = {"sets": {"all": {"root": str(roots["all"]), "tasks": ["flow"],
                             "clip": {"length": 2, "sampling": "next"}}},
            "transforms": {"resize": False, "flip": 0.0}}  # fmt: skip
    tree = {"name": "flow", "model": _model().model_dump(), "data": data,
            "recipe": {"stages": [{"name": "s", "steps": 1, "batch_size": 1}]},
            "train": {"accelerator": "cpu"}}  # fmt: skip
    config = validate_tree(tree, {}, RunConfig, "<test>")
    torch.manual_seed(0)
    net = build_model(config.model)
    # Zero the last convs: the model predicts exactly zero flow, whose EPE is the mean true flow
    # length and whose Fl-all is the share of true flows longer than 3 px.
    for conv in [d.flow for d in net.heads["flow"].decoders] + [net.heads["flow"].context.net[-1]]:
        torch.nn.init.zeros_(conv.weight)
        torch.nn.init.zeros_(conv.bias)
    weights = tmp_path / "weights.pt"
    torch.save(net.state_dict(), weights)
    result = evaluate_model(config, weights, split="train", progress=False, resources=False)
    metrics = result.metrics["flow"]
    dataset = build_dataset(DataConfig(**data), "train")
    samples = [dataset[i] for i in range(len(dataset))]
    # The last frame's reference is the previous frame: its forward flow is not scored.
    last = max(s.meta.frame_index for s in samples)
    lengths = torch.cat([s.flow.double().norm(dim=0)[s.flow_valid] for s in samples
                         if s.meta.frame_index != last])  # fmt: skip
    assert len(lengths) > 0 and all(s.flow is not None for s in samples)
    assert metrics["EPE"] == pytest.approx(float(lengths.mean()), rel=1e-6)
    assert metrics["Fl-all"] == pytest.approx(100 * float((lengths > 3).double().mean()), rel=1e-6)
