"""Safetensors weights (atomic save, load with report) and the per-decoder merge."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from drivemtl.engine.checkpoint import (
    CheckpointError,
    load_into,
    load_weights,
    merge_decoders,
    save_weights,
)


class Net(nn.Module):
    def __init__(self, heads: tuple[str, ...] = ("semantic", "depth")) -> None:
        super().__init__()
        self.backbone = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
        self.heads = nn.ModuleDict({h: nn.Linear(4, 2) for h in heads})


def test_round_trip_is_bit_exact(tmp_path: Path) -> None:
    net = Net()
    path = save_weights(net, tmp_path / "w" / "final.safetensors", {"stage": "adapt"})
    assert path.is_file() and not list(path.parent.glob(".*tmp"))
    state = load_weights(path)
    assert set(state) == set(net.state_dict())
    for key, value in net.state_dict().items():
        assert torch.equal(state[key], value)


def test_load_into_reports_fresh_heads_and_checks_shapes(tmp_path: Path) -> None:
    src = Net(heads=("semantic",))
    dst = Net(heads=("semantic", "depth"))
    report = load_into(dst, src.state_dict())
    assert report.missing == ["heads.depth.weight", "heads.depth.bias"]
    assert report.unexpected == []
    assert torch.equal(dst.heads.semantic.weight, src.heads.semantic.weight)
    bad = {"backbone.0.weight": torch.zeros(5, 3)}
    with pytest.raises(CheckpointError, match=r"backbone.0.weight.*\(5, 3\).*\(4, 3\)"):
        load_into(dst, bad, source="x.safetensors")


def test_load_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="not found"):
        load_weights(tmp_path / "nope.safetensors")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not safetensors")
    with pytest.raises(CheckpointError, match=r"junk\.safetensors"):
        load_weights(junk)


def test_merge_takes_each_decoder_from_its_finetune() -> None:
    base = Net().state_dict()
    ft_sem = {k: v + 1 for k, v in base.items()}
    ft_dep = {k: v + 2 for k, v in base.items()}
    prefixes = {"semantic": ["heads.semantic."], "depth": ["heads.depth."]}
    merged = merge_decoders(base, {"semantic": ft_sem, "depth": ft_dep}, prefixes)
    for key, value in merged.items():
        if key.startswith("heads.semantic."):
            assert torch.equal(value, base[key] + 1)
        elif key.startswith("heads.depth."):
            assert torch.equal(value, base[key] + 2)
        else:  # shared network untouched (BatchNorm buffers included)
            assert torch.equal(value, base[key])


def test_merge_rejects_overlapping_or_empty_prefixes() -> None:
    base = Net().state_dict()
    with pytest.raises(CheckpointError, match="both 'semantic' and 'depth'"):
        merge_decoders(
            base,
            {"semantic": base, "depth": base},
            {"semantic": ["heads."], "depth": ["heads.depth."]},
        )
    with pytest.raises(CheckpointError, match="owns no tensor"):
        merge_decoders(base, {"pose": base}, {"pose": ["heads.pose."]})
