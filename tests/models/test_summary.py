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
