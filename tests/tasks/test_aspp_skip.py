"""The `aspp_skip` head family: options, side convs per task, the multi-scale loss, training."""

from __future__ import annotations

import math
import random
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from batches import make_batch
from torch import Tensor

from drivemtl.config.loader import ConfigError, validate_tree
from drivemtl.data.synthetic import generate_dataset
from drivemtl.engine.run_config import RunConfig
from drivemtl.engine.trainer import run_recipe
from drivemtl.evaluation.model_eval import evaluate_model
from drivemtl.models import build_model
from drivemtl.models.config import ModelConfig, TaskConfig
from drivemtl.models.exchanges import EXCHANGES, ExchangeOptions
from drivemtl.models.features import Features, task_stream
from drivemtl.models.stage import FeatureStage, StageContext
from drivemtl.tasks import TASKS
from drivemtl.tasks.families.aspp_skip import ASPPSkipOptions

H, W = 64, 96
TINY = {"type": "aspp_skip", "channels": [16, 16, 8, 8, 8], "aspp_channels": 16}


def tiny_model(
    tasks: tuple[str, ...] = ("semantic", "depth"), exchanges: list | None = None, **head: object
) -> torch.nn.Module:
    """ResNet-18 (width 8) with narrow aspp_skip heads for `tasks`."""
    config = ModelConfig(
        backbone={"type": "resnet18", "width": 8, "norm": "bn"},
        neck={"type": "fpn", "out_channels": 8, "norm": "gn"},
        tasks={t: TaskConfig(head={**TINY, **head}) for t in tasks},
        exchanges=exchanges or [],
    )
    return build_model(config)


def test_defaults_are_densemtls_and_scale_zero_is_always_supervised() -> None:
    options = ASPPSkipOptions()
    assert options.channels == (256, 256, 128, 128, 64) and options.aspp_rates == (6, 12, 18)
    assert (options.aspp_channels, options.aspp_dropout) == (256, 0.5)
    assert options.supervised_scales == (0, 1) and options.exchange_scale == 1
    with pytest.raises(ConfigError, match="must include 0"):
        TASKS.get("semantic")(TaskConfig(head={"type": "aspp_skip", "supervised_scales": [1]}))
    with pytest.raises(ConfigError, match=r"scales must be in 0\.\.2"):
        TASKS.get("depth")(
            TaskConfig(head={"type": "aspp_skip", "channels": [8, 8, 8], "exchange_scale": 3})
        )


def test_regression_tasks_get_three_by_three_side_convs() -> None:
    model = tiny_model(("semantic", "depth", "normals", "edges"))
    kernels = {
        t: model.heads[t].sides["0"][b].kernel_size
        for t, b in (
            ("semantic", "logits"),
            ("depth", "inverse"),
            ("normals", "normals"),
            ("edges", "logits"),
        )
    }
    assert kernels == {"semantic": (1, 1), "depth": (3, 3), "normals": (3, 3), "edges": (1, 1)}
    assert model.heads["semantic"].sides["1"]["logits"].out_channels == 19
    # C2..C4 widths follow ResNet's pyramid below C5 (64 channels at width 8): 8, 16, 32.
    assert model.heads["depth"].skip_channels == {2: 8, 3: 16, 4: 32}


def _up(x: Tensor) -> Tensor:
    return F.interpolate(x, size=(H, W), mode="bilinear", align_corners=False)


def _berhu(raw: Tensor, depth: Tensor, d_far: float = 80.0) -> Tensor:
    """berHu on inverse normalised depth: pred softplus(raw), target d_far / d, valid d > 0."""
    valid = depth > 0
    err = (F.softplus(raw[:, 0]) - d_far / depth.clamp(min=1e-6))[valid].abs()
    c = 0.2 * err.max()
    return torch.where(err <= c, err, (err**2 + c**2) / (2 * c)).mean()


@pytest.mark.parametrize(
    ("scales", "mode", "combine"),
    [
        ((0, 1), "paper", lambda ls: ls[0] + ls[1]),
        ((0, 1, 2), "paper", lambda ls: ls[0] + (ls[1] + ls[2]) / 2),
        ((0, 1, 2), "mean", lambda ls: (ls[0] + ls[1] + ls[2]) / 3),
    ],
)
def test_loss_combines_the_upsampled_side_output_losses(scales, mode, combine) -> None:
    torch.manual_seed(0)
    model = tiny_model(supervised_scales=list(scales), scale_loss=mode).eval()
    batch = make_batch(2, ("semantic", "depth"), labeled=[True, False])
    outputs = model(batch, targets=True)
    target = batch.semantic[:1].long()
    maps = {
        0: outputs["semantic"]["logits"],
        **{s: outputs["semantic"].side[s]["logits"] for s in scales if s},
    }
    ce = [F.cross_entropy(_up(maps[s][:1]), target, ignore_index=255) for s in scales]
    got = model.tasks["semantic"].loss(outputs["semantic"], batch)
    assert torch.allclose(got, combine(ce), atol=1e-5)
    depth_maps = {
        0: outputs["depth"]["inverse"],
        **{s: outputs["depth"].side[s]["inverse"] for s in scales if s},
    }
    berhu = [_berhu(_up(depth_maps[s][:1]), batch.depth[:1]) for s in scales]
    got = model.tasks["depth"].loss(outputs["depth"], batch)
    assert torch.allclose(got, combine(berhu), atol=1e-5)
    assert not math.isclose(ce[0].item(), ce[1].item(), rel_tol=1e-4)  # the scales differ


def test_predictions_read_scale_zero_and_need_no_side_outputs() -> None:
    torch.manual_seed(0)
    model = tiny_model().eval()
    batch = make_batch(2, ("semantic", "depth"))
    outputs = model(batch, targets=False)
    assert outputs["semantic"].side == {} and outputs["depth"]["inverse"].shape == (2, 1, H, W)
    predictions = model.predict(batch)
    labels = outputs["semantic"]["logits"].softmax(1).argmax(1)
    assert torch.equal(predictions[0].semantic, labels[0])
    assert torch.allclose(
        predictions[1].depth,
        (80.0 / F.softplus(outputs["depth"]["inverse"][1, 0])).clamp(0.1, 80.0),
    )
    with pytest.raises(ValueError, match="no side output at scale 1"):
        model.tasks["semantic"].loss(outputs["semantic"], batch)


# --- an exchange module between the decoder (scale 1) and the predictor (scale 0) --------------


class Zero(FeatureStage):
    """Replaces the first task's decoder features by zeros."""

    def __init__(self, options: ExchangeOptions, context: StageContext) -> None:
        super().__init__()
        self.task = options.tasks[0]
        self.width = context.task_channels[self.task]
        self.modifies = (task_stream(self.task),)

    def forward(self, features: Features) -> None:
        features.tasks[self.task] = torch.zeros_like(features.tasks[self.task])


EXCHANGES.register("test_aspp_zero", options=ExchangeOptions)(Zero)


def test_exchange_acts_between_the_scale_one_side_output_and_the_prediction() -> None:
    torch.manual_seed(0)
    plain = tiny_model().eval()
    torch.manual_seed(0)
    exchanged = tiny_model(exchanges=[{"type": "test_aspp_zero", "tasks": ["semantic", "depth"]}])
    exchanged.eval()
    assert exchanged.exchanges[0].width == 8  # the decoder width at scale 1 (channels[3])
    batch = make_batch(2, ("semantic", "depth"))
    with torch.no_grad():
        a, b = plain(batch, targets=True), exchanged(batch, targets=True)
        head = exchanged.heads["semantic"]
        zeros = torch.zeros(2, 8, H // 2, W // 2)
        expected = head.sides["0"]["logits"](head.run_block(0, zeros, b.features))
    assert torch.equal(a["semantic"].side[1]["logits"], b["semantic"].side[1]["logits"])
    assert torch.allclose(b["semantic"]["logits"], expected, atol=1e-6)
    assert not torch.allclose(a["semantic"]["logits"], b["semantic"]["logits"], atol=1e-4)
    assert torch.equal(a["depth"]["inverse"], b["depth"]["inverse"])


# --- training through the public API ---------------------------------------------------------


def test_a_tiny_model_trains_and_its_loss_decreases() -> None:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        model = tiny_model().train()
        batch = make_batch(2, ("semantic", "depth"))
        optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
        history = []
        for _ in range(25):
            loss = sum(model.losses(batch).values())
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            history.append(loss.item())
    finally:
        torch.set_num_threads(threads)
    assert min(history[-5:]) < 0.4 * history[0], history


@pytest.mark.slow
def test_run_recipe_and_evaluate_model(tmp_path: Path) -> None:
    root = generate_dataset(
        tmp_path / "ds", "dense", num_frames=4, size=(W, H), seed=1, progress=False
    )
    tree = {
        "name": "aspp",
        "seed": 3,
        "model": {
            "backbone": {"type": "resnet18", "width": 8, "norm": "bn"},
            "neck": {"type": "fpn", "out_channels": 8, "norm": "gn"},
            "tasks": {"semantic": {"head": TINY}, "depth": {"head": TINY}},
        },
        "data": {
            "sets": {"dense": {"root": str(root / "dense"), "tasks": ["semantic", "depth"]}},
            "transforms": {"heights": [H]},
        },
        "recipe": {
            "stages": [{"name": "sd", "steps": 4, "batch_size": 2, "optimizer": {"lr": 1e-3}}]
        },
        "train": {"accelerator": "cpu"},
    }
    config = validate_tree(tree, {}, RunConfig, "<test>")
    random.seed(0)
    run = run_recipe(config, tmp_path / "run", progress=False)
    result = evaluate_model(config, run.final_weights, out_dir=tmp_path / "eval", progress=False)
    assert result.frames == {"dense": 4}
    assert math.isfinite(result.metrics["semantic"]["mIoU"])
    assert math.isfinite(result.metrics["depth"]["RMSE"])
