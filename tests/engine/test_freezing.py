"""Freezing end to end: an adapt stage keeps frozen tensors bit-identical to its start point,
per-decoder fine-tuning + merge changes only each task's own decoder, and what the model keeps
frozen itself (`backbone.frozen_stages`) stays frozen in a stage that trains everything."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
from engine_fixtures import make_config, tiny_model

from drivemtl.engine.checkpoint import load_weights, save_weights
from drivemtl.engine.trainer import run_recipe
from drivemtl.models import build_model


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
        {
            "name": "finetune",
            "steps": 2,
            "kind": {"type": "per_decoder"},
            "optimizer": {"lr": 1e-3},
        },
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


class RecordRequiresGrad(L.Callback):
    """Records `requires_grad` of every model parameter when training starts."""

    def __init__(self) -> None:
        self.seen: dict[str, bool] = {}

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.seen = {n: p.requires_grad for n, p in pl_module.model.named_parameters()}


@pytest.mark.slow
def test_backbone_frozen_stages_stay_frozen_when_a_stage_trains_everything(
    tiny_data: Path, tmp_path: Path
) -> None:
    model = tiny_model()
    model["backbone"] = {**model["backbone"], "frozen_stages": 1}  # stem + layer1, BN included
    start = tmp_path / "start.safetensors"
    stage = {
        "name": "joint",
        "steps": 3,
        "sampler": "set_round_robin",
        "trainable": ["*"],
        "optimizer": {"lr": 1e-2},
        "init": str(start),
    }
    config = make_config(tiny_data, [stage], model=model)
    save_weights(build_model(config.model), start)
    record = RecordRequiresGrad()
    result = run_recipe(config, tmp_path / "run", progress=False, callbacks=[record])

    stem = ("backbone.conv1.", "backbone.bn1.", "backbone.layer1.")
    fixed = [n for n in record.seen if n.startswith(stem)]
    assert fixed and not any(record.seen[n] for n in fixed)
    assert all(record.seen[n] for n in record.seen if not n.startswith(stem))
    before, after = load_weights(start), load_weights(result.final_weights)
    kept = [k for k in before if k.startswith(stem)]  # BN running statistics included
    assert "backbone.bn1.running_mean" in kept
    changed = [k for k in kept if not torch.equal(before[k], after[k])]
    assert not changed, changed[:5]
    layer2 = [k for k in before if k.startswith("backbone.layer2.") and k.endswith("weight")]
    assert any(not torch.equal(before[k], after[k]) for k in layer2)  # the rest did train


@pytest.mark.slow
def test_lv_adapter_adapt_stage_trains_prompts_adapter_and_fpn_only(
    tiny_data: Path, tmp_path: Path
) -> None:
    """Pretrain-adapt-finetune with the LV-Adapter through `run_recipe`: the adapt stage leaves
    the backbone, the heads and the CLIP text encoder bit-identical and trains the FPN, the task
    prompts and the adapter; fine-tuning trains everything but the text encoder."""
    from drivemtl.models.language import write_vocabulary

    vocab = write_vocabulary(tmp_path / "vocab.txt.gz", [("r", "o"), ("ro", "a"), ("s", "k")])
    model = tiny_model()
    model["adapters"] = [{
        "type": "lv_adapter", "tasks": ["semantic"], "layers": 1, "heads": 2, "ffn_dim": 32,
        "n_ctx": 4, "vocabulary": str(vocab),
        "text_encoder": {"width": 16, "layers": 1, "heads": 2, "context_length": 24,
                         "output_dim": 12},
    }]  # fmt: skip
    stages = [
        {"name": "adapt", "steps": 3, "sampler": "set_round_robin", "trainable": ["*"],
         "frozen": ["@backbone", "@decoder"], "optimizer": {"lr": 1e-2}},
        {"name": "finetune", "steps": 2, "sampler": "set_round_robin", "optimizer": {"lr": 1e-3}},
    ]  # fmt: skip
    config = make_config(tiny_data, stages, model=model)
    torch.manual_seed(0)
    start = save_weights(build_model(config.model).state_dict(), tmp_path / "start.safetensors")
    config.recipe.stages[0].init = str(start)
    result = run_recipe(config, tmp_path / "run", progress=False)
    before = load_weights(start)
    adapt, final = (load_weights(s.weights) for s in result.stages)

    def changed(a: dict, b: dict, prefix: str) -> list[str]:
        return [k for k in a if k.startswith(prefix) and not torch.equal(a[k], b[k])]

    for prefix in ("backbone.", "heads.", "adapters.0.text_encoder."):
        assert not changed(before, adapt, prefix), prefix
    for prefix in ("neck.", "adapters.0.prompts.", "adapters.0.decoder"):
        assert changed(before, adapt, prefix), prefix
    assert not changed(adapt, final, "adapters.0.text_encoder.")
    assert changed(adapt, final, "backbone.") and changed(adapt, final, "heads.")
