"""Freezing end to end: an adapt stage keeps frozen tensors bit-identical to its start point, and
per-decoder fine-tuning + merge changes only each task's own decoder."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from engine_fixtures import make_config

from drivemtl.engine.checkpoint import load_weights
from drivemtl.engine.trainer import run_recipe


@pytest.mark.slow
def test_adapt_and_per_decoder_finetune_touch_only_what_they_train(
    tiny_data: Path, tmp_path: Path
) -> None:
    stages = [
        {"name": "joint", "steps": 2, "sampler": "set_round_robin", "optimizer": {"lr": 1e-2}},
        {
            "name": "adapt",
            "steps": 2,
            "sampler": "set_round_robin",
            "trainable": ["*"],
            "frozen": ["backbone.*", "heads.*"],
            "optimizer": {"lr": 1e-2},
        },
        {"name": "finetune", "steps": 2, "per_decoder": True, "optimizer": {"lr": 1e-3}},
    ]
    result = run_recipe(make_config(tiny_data, stages), tmp_path / "run", progress=False)
    by_name = {s.name: load_weights(s.weights) for s in result.stages}
    assert list(by_name) == ["joint", "adapt", "finetune.semantic", "finetune.tagging", "finetune"]
    joint, adapt, merged = by_name["joint"], by_name["adapt"], by_name["finetune"]

    def same(a: dict, b: dict, key: str) -> bool:
        return torch.equal(a[key], b[key])

    frozen = [k for k in joint if k.startswith(("backbone.", "heads."))]
    changed = [k for k in frozen if not same(joint, adapt, k)]
    assert frozen and not changed, changed[:5]  # BN statistics included
    neck = [k for k in joint if k.startswith("neck.") and k.endswith("weight")]
    assert any(not same(joint, adapt, k) for k in neck)  # the FPN did train

    for task in ("semantic", "tagging"):
        tuned = by_name[f"finetune.{task}"]
        own = [k for k in merged if k.startswith(f"heads.{task}.")]
        assert own and all(same(merged, tuned, k) for k in own)
        assert any(not same(merged, adapt, k) for k in own)  # the decoder was fine-tuned
        # the fine-tuning run of this decoder left everything else as it started
        others = [k for k in tuned if not k.startswith(f"heads.{task}.")]
        assert all(same(tuned, adapt, k) for k in others)
    shared = [k for k in merged if not k.startswith("heads.")]
    assert all(same(merged, adapt, k) for k in shared)
    final = load_weights(result.final_weights)
    assert all(same(final, merged, k) for k in merged)
