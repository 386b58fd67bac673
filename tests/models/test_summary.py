"""Parameter / MAC summary per component, checked against hand counts of a tiny model."""

from __future__ import annotations

from pathlib import Path

import torch
from batches import tiny_config
from typer.testing import CliRunner

from drivemtl.cli.model import app
from drivemtl.models import build_model
from drivemtl.models.summary import format_summary, summarize

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
    result = CliRunner().invoke(
        app, ["summary", str(REPO / "configs/models/tiny.yaml"), "--height", "64", "--width", "96"]
    )
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
