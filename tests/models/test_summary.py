"""Parameter / MAC summary per component, checked against hand counts of a tiny model."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from batches import TINY_HEADS, tiny_config
from torch.utils.flop_counter import FlopCounterMode
from typer.testing import CliRunner

from drivemtl.cli.model import app
from drivemtl.models import build_model
from drivemtl.models.summary import format_summary, model_memory, summarize

REPO = Path(__file__).resolve().parents[2]


def test_macs_of_the_tagging_head_and_totals() -> None:
    torch.manual_seed(0)
    model = build_model(tiny_config(("tagging", "semantic")))
    summary = summarize(model, (64, 96))
    heads = {c.name: c for c in summary.heads}
    # tagging: three linear layers on the 64-channel C5 of ResNet-18 at width 8 -> 64 x 18 MACs
    assert heads["heads.tagging"].macs == 64 * (7 + 7 + 4)
    assert heads["heads.tagging"].params == 64 * 18 + 18
    assert summary.total_params == sum(p.numel() for p in model.parameters())
    # conv1 alone: 7x7x3 -> 8 channels at 32x48 outputs
    assert summary.shared_macs > 7 * 7 * 3 * 8 * 32 * 48
    assert summary.total_macs == summary.shared_macs + sum(c.macs for c in summary.heads)
    assert 0.5 < summary.ratio() < 1.0
    assert "unified / single-task MACs ratio" in format_summary(summary)


def test_cli_prints_the_table() -> None:
    config = str(REPO / "configs/models/tiny.yaml")
    args = ["summary", config, "--height", "64", "--width", "96", "--memory-size", "64x96"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "heads.semantic" in result.output and "backbone" in result.output


def test_every_stage_is_a_row_and_split_heads_are_counted_once() -> None:
    """The semantic decoder runs as decode + predict methods (no module forward of its own): its
    MACs are those of its sub-modules; the shared group encoder is a shared row."""
    from drivemtl.models.config import ModelConfig

    torch.manual_seed(0)
    cfg = tiny_config(("semantic", "drivable"))
    cfg = ModelConfig.model_validate(
        {**cfg.model_dump(), "groups": {"segmentation": {"type": "semantic_fpn", "channels": 16}}}
    )
    model = build_model(cfg)
    summary = summarize(model, (64, 96))
    assert [c.name for c in summary.shared] == ["backbone", "neck", "groups.segmentation"]
    heads = {c.name: c for c in summary.heads}
    assert list(heads) == ["heads.semantic", "heads.drivable"]
    # each head is one 1x1 conv from the 16-channel group map at stride 4 (16 x 24 positions)
    assert heads["heads.semantic"].macs == 16 * 19 * 16 * 24
    assert heads["heads.drivable"].macs == 16 * 3 * 16 * 24
    assert summary.total_params == sum(p.numel() for p in model.parameters())


def mteb_config(tasks: tuple[str, ...]):
    """The tiny model of `tasks` with an mTEB (8 channels, downscale 2) between all of them."""
    from drivemtl.models.config import ModelConfig

    cfg = tiny_config(tasks)
    exchange = {"type": "mteb", "tasks": list(tasks), "channels": 8, "downscale": 2}
    return ModelConfig.model_validate({**cfg.model_dump(), "exchanges": [exchange]})


def test_counting_on_meta_gives_the_real_pass_macs() -> None:
    torch.manual_seed(0)
    model = build_model(mteb_config(("semantic", "depth")))
    on_meta, real = summarize(model, (64, 96)), summarize(model, (64, 96), on_meta=False)
    assert (on_meta.method, real.method) == ("meta", "cpu")
    assert on_meta.shared == real.shared and on_meta.heads == real.heads
    assert on_meta.component("exchanges.0").macs > 0


def test_single_task_models_count_every_dependency() -> None:
    """An instance model needs the detector (a support head here); no single-task model has the
    exchange block; the ratio is the unified MACs over the sum of those models."""
    torch.manual_seed(0)
    model = build_model(tiny_config(("semantic", "instance")))
    summary = summarize(model, (64, 96))
    assert summary.single_task == {
        "semantic": ("backbone", "neck", "heads.semantic"),
        "instance": ("backbone", "neck", "heads.detection", "heads.instance"),
    }
    macs = {c.name: c.macs for c in [*summary.shared, *summary.heads]}
    base = macs["backbone"] + macs["neck"]
    expected = (base + macs["heads.semantic"]) + (
        base + macs["heads.detection"] + macs["heads.instance"]
    )
    assert summary.single_task_macs == expected
    assert summary.ratio() == pytest.approx(sum(macs.values()) / expected)
    exchanged = summarize(build_model(mteb_config(("semantic", "depth"))), (64, 96))
    assert exchanged.single_task["depth"] == ("backbone", "neck", "heads.depth")
    assert exchanged.total_macs == sum(
        c.macs for c in [*exchanged.shared, *exchanged.heads]
    ) and "exchanges.0" in [c.name for c in exchanged.shared]


def test_stage_memory_on_meta_matches_a_real_pass() -> None:
    """Per stage and overall, inference and training forward; the xTAM attention of each of the
    2 pairs (16 x 24 stride-4 maps pooled by 2: 96 positions) has logits and softmax live."""
    torch.manual_seed(0)
    model = build_model(mteb_config(("semantic", "depth")))
    before = {n: t.clone() for n, t in model.state_dict().items()}
    for training in (False, True):
        on_meta = model_memory(model, (64, 96), batch_size=2, training=training)
        real = model_memory(model, (64, 96), batch_size=2, on_meta=False, training=training)
        assert (on_meta.method, real.method) == ("meta", "cpu")
        assert on_meta.stages == real.stages and on_meta.peak_bytes == real.peak_bytes
    assert model.training  # the mode is restored, the BatchNorm statistics untouched
    assert all(torch.equal(t, before[n]) for n, t in model.state_dict().items())
    inference = model_memory(model, (64, 96), batch_size=2)
    assert inference.input_bytes == 2 * 3 * 64 * 96 * 4
    assert inference.stage("exchanges.0").own_bytes >= 2 * 2 * 96 * 96 * 4
    assert inference.peak_bytes == max(s.peak_bytes for s in inference.stages)


def test_memory_falls_back_to_a_real_pass_for_roi_heads() -> None:
    torch.manual_seed(0)
    model = build_model(tiny_config(("detection",)))
    memory = model_memory(model, (64, 96))
    assert memory.method == "cpu" and "meta" in memory.note
    assert memory.peak_bytes > memory.input_bytes


def test_cli_prints_the_memory_column(tmp_path: Path) -> None:
    config = tmp_path / "dense.yaml"
    config.write_text(
        "model:\n  backbone: {type: resnet18, width: 8, norm: gn}\n"
        "  neck: {type: fpn, out_channels: 16, norm: gn}\n"
        "  tasks: {semantic: {head: {channels: 16}}}\n"
    )
    args = ["summary", str(config), "--height", "64", "--width", "96"]
    result = CliRunner().invoke(app, [*args, "--memory-size", "64x96"])
    assert result.exit_code == 0, result.output
    assert "peak MiB" in result.output and "counted on meta" in result.output
    torch.manual_seed(0)
    from drivemtl.engine.run_config import load_run_config

    expected = model_memory(build_model(load_run_config(config).model), (64, 96))
    assert f"{expected.peak_bytes / 2**20:.1f}" in result.output.splitlines()[-2]
    bad = CliRunner().invoke(app, [*args, "--memory-size", "64by96"])
    assert bad.exit_code != 0 and "--memory-size" in str(bad.exception)
    plain = CliRunner().invoke(app, [*args, "--memory-size", "none"])
    assert plain.exit_code == 0 and "peak MiB" not in plain.output


class _QueryAdapter(torch.nn.Module):
    """Learned queries expanded over the batch (a view of a parameter) through a linear layer."""

    modifies = ("pixel",)

    def __init__(self) -> None:
        super().__init__()
        self.queries = torch.nn.Parameter(torch.randn(5, 4))
        self.proj = torch.nn.Linear(4, 3)

    def forward(self, features) -> None:
        q = self.queries[None].expand(features.pixel[-1].shape[0], -1, -1)
        index = len(features.pixel) - 1
        features.pixel[index] = features.pixel[index] + 0.0 * self.proj(q).sum()


def test_views_of_parameters_are_counted_and_grad_flags_restored() -> None:
    from drivemtl.models.adapters import ADAPTERS, AdapterOptions

    if "test_query_view" not in ADAPTERS:
        ADAPTERS.register("test_query_view", options=AdapterOptions)(lambda o, c: _QueryAdapter())
    cfg = tiny_config(("semantic",)).model_dump()  # a head that reads the adapted pixels
    cfg["adapters"] = [{"type": "test_query_view"}]
    from drivemtl.models.config import ModelConfig

    model = build_model(ModelConfig.model_validate(cfg))
    model.backbone.requires_grad_(False)  # a frozen part stays frozen after the count
    summary = summarize(model, (64, 96), on_meta=False)
    adapter = next(c for c in summary.shared if c.name == "adapters.0")
    assert adapter.macs == 5 * 4 * 3  # one image: 5 queries x (4 -> 3)
    assert all(p.requires_grad for p in model.adapters.parameters())
    assert not any(p.requires_grad for p in model.backbone.parameters())


def video_config():
    """A tiny detection + MOT + flow model (narrow flow decoder on P4 and P3)."""
    from batches import TINY_HEADS

    from drivemtl.models.config import ModelConfig, TaskConfig

    mot = {"channels": 16, "num_convs": 1, "norm_groups": 4, "fc_dim": 32, "embed_dim": 16}
    flow = {"strides": [16, 8], "decoder_widths": [16, 16], "context_widths": [16, 16],
            "context_dilations": [1, 2]}  # fmt: skip
    return ModelConfig(
        backbone={"type": "resnet18", "width": 8, "norm": "gn"},
        neck={"type": "fpn", "out_channels": 16, "norm": "gn"},
        tasks={
            "detection": TaskConfig(head=TINY_HEADS["detection"]),
            "mot": TaskConfig(head=mot),
            "flow": TaskConfig(head=flow),
        },
    )


def test_the_flow_decoder_is_counted_on_a_reference_frame() -> None:
    """The flow head runs on key + reference features: its MACs are those of the head itself on
    a blank frame pair (not 0, as without a reference frame), and the reference frame's
    backbone + neck are not added to the shared stages; the MOT embedding head counts too."""
    from drivemtl.models.summary import blank_batch

    torch.manual_seed(0)
    model = build_model(video_config()).eval()
    summary = summarize(model, (64, 96))
    heads = {c.name: c for c in summary.heads}
    batch = blank_batch((64, 96))
    with torch.no_grad():
        features = model.extract(batch.images, batch.image_sizes)
        features.reference = model.extract(batch.images, batch.image_sizes)
        counter = FlopCounterMode(display=False)
        with counter:
            model.heads["flow"](features)
    assert heads["heads.flow"].macs == counter.get_total_flops() // 2 > 0
    assert heads["heads.flow"].params == sum(p.numel() for p in model.heads["flow"].parameters())
    assert heads["heads.mot"].macs > 0
    alone = summarize(build_model(tiny_config(("detection",))), (64, 96))
    assert summary.shared == alone.shared  # the same backbone + neck, counted once
    assert summary.total_macs == summary.shared_macs + sum(c.macs for c in summary.heads)


def test_a_failed_meta_pass_does_not_leak_into_the_real_count() -> None:
    """The detector cannot run on meta (NMS, top-k); the fallback pass must count every op once:
    the components add up to a plain FlopCounterMode count of the same forward."""
    from drivemtl.models.summary import blank_batch

    torch.manual_seed(0)
    model = build_model(tiny_config(("semantic", "detection")))
    summary = summarize(model, (64, 96))
    assert summary.method == "cpu"
    counter = FlopCounterMode(display=False)
    model.eval()
    with torch.no_grad(), counter:
        model(blank_batch((64, 96)))
    assert summary.total_macs == counter.get_total_flops() // 2
    assert summary.component("heads.detection").macs < summary.total_macs // 2


def test_roi_heads_on_a_fixed_number_of_detections() -> None:
    """With `rois_per_image` the mask head's MACs scale with it, the keypoint head runs on the
    person classes' share of the cycled classes, and the detector itself is unchanged."""
    torch.manual_seed(0)
    model = build_model(tiny_config(("detection", "instance", "pose")))
    eight, sixteen = (summarize(model, (64, 96), rois_per_image=n) for n in (8, 16))
    for name in ("heads.instance", "heads.pose"):
        assert eight.component(name).macs > 0
        assert sixteen.component(name).macs == 2 * eight.component(name).macs
    assert eight.component("heads.detection") == sixteen.component("heads.detection")
    assert "RoI heads on 8 detections per image" in format_summary(eight)
    with pytest.raises(ValueError, match="rois_per_image"):
        summarize(model, (64, 96), rois_per_image=0)


def test_deformable_convolutions_are_counted() -> None:
    """A DCN layer reports its offset / mask conv and its main im2col product: on the group's
    16-channel stride-4 map (16 x 24), one shared deformable conv to 8 channels, then 1x1."""
    from drivemtl.models.config import ModelConfig

    torch.manual_seed(0)
    heads = {"semantic": {"conv": "deform", "channels": 8, "shared_convs": 1}}
    cfg = tiny_config(("semantic",), **heads)
    cfg = ModelConfig.model_validate(
        {**cfg.model_dump(), "groups": {"segmentation": {"type": "semantic_fpn", "channels": 16}}}
    )
    summary = summarize(build_model(cfg), (64, 96))
    positions = 16 * 24
    offset_conv, main, output = 16 * 27 * 9, 16 * 8 * 9, 8 * 19
    assert summary.component("heads.semantic").macs == (offset_conv + main + output) * positions


def test_single_task_tagging_needs_no_neck_and_mots_needs_what_it_joins() -> None:
    """A tagging model is the backbone + its classifier (no FPN: it reads C5 only); a MOTS
    model has the detector, the mask head and the embedding head whose outputs it joins."""
    from drivemtl.models.config import ModelConfig, TaskConfig
    from drivemtl.models.summary import single_task_components

    mot = {"channels": 16, "num_convs": 1, "norm_groups": 4, "fc_dim": 32, "embed_dim": 16}
    heads = {"tagging": {}, "detection": TINY_HEADS["detection"],
             "instance": TINY_HEADS["instance"], "mot": mot, "mots": {}}  # fmt: skip
    cfg = ModelConfig(
        backbone={"type": "resnet18", "width": 8, "norm": "gn"},
        neck={"type": "fpn", "out_channels": 16, "norm": "gn"},
        tasks={t: TaskConfig(head=h) for t, h in heads.items()},
    )
    components = single_task_components(build_model(cfg))
    assert components["tagging"] == ("backbone", "heads.tagging")
    assert components["mot"] == ("backbone", "neck", "heads.detection", "heads.mot")
    assert set(components["mots"]) == {
        "backbone", "neck", "heads.detection", "heads.instance", "heads.mot", "heads.mots"
    }  # fmt: skip


def test_table_tells_a_tiny_stage_from_an_empty_one() -> None:
    from drivemtl.models.summary import ComponentCost, ModelSummary

    summary = ModelSummary(
        (64, 96),
        [ComponentCost("backbone", 10, 2_000_000_000)],
        [ComponentCost("heads.tagging", 5, 36_864), ComponentCost("heads.mots", 0, 0)],
    )
    rows = {line.split()[0]: line.split()[-1] for line in format_summary(summary).splitlines()}
    assert rows["backbone"] == "2.000"
    assert rows["heads.tagging"] == "<0.001" and rows["heads.mots"] == "0.000"


def test_cli_counts_roi_heads_on_fixed_detections(tmp_path: Path) -> None:
    config = tmp_path / "pose.yaml"
    config.write_text(
        "model:\n  backbone: {type: resnet18, width: 8, norm: gn}\n"
        "  neck: {type: fpn, out_channels: 16, norm: gn}\n"
        "  tasks: {pose: {head: {channels: 16, num_convs: 1}}}\n"
    )
    args = ["summary", str(config), "--height", "64", "--width", "96", "--memory-size", "64x96"]
    result = CliRunner().invoke(app, [*args, "--rois", "4"])
    assert result.exit_code == 0, result.output
    assert "RoI heads on 4 detections per image" in result.output
    pose = next(line for line in result.output.splitlines() if line.startswith("heads.pose"))
    assert float(pose.split()[2]) > 0  # GMACs of a keypoint head on the person detections
    bad = CliRunner().invoke(app, [*args, "--rois", "0"])
    assert bad.exit_code != 0 and "--rois 0" in str(bad.exception)
