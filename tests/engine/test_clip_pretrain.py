"""Contrastive pretraining of a tiny CLIP on captioned synthetic frames, and loading its files."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from drivemtl.data.config import DataConfig
from drivemtl.data.synthetic import generate_dataset
from drivemtl.engine.clip_pretrain import (
    CLIPPretrainOptions,
    lr_factor,
    pretrain_clip,
    stack_images,
)
from drivemtl.models import build_model
from drivemtl.models.config import ModelConfig
from drivemtl.models.language import CLIPTokenizer


@pytest.fixture(scope="module")
def captioned(tmp_path_factory: pytest.TempPathFactory) -> DataConfig:
    root = tmp_path_factory.mktemp("captioned")
    for split, frames, seed in (("train", 8, 3), ("val", 4, 4)):
        generate_dataset(root / split, "lv-full", frames, (128, 64), seed, progress=False)
    return DataConfig.model_validate({
        "sets": {"full": {"root": str(root / "{split}" / "full"),
                          "tasks": ["semantic", "drivable", "detection"]}},
        "transforms": {"heights": [64], "test_height": 64, "flip": 0.0},
    })  # fmt: skip


def test_pretraining_learns_and_writes_loadable_files(
    captioned: DataConfig, tmp_path: Path
) -> None:
    options = CLIPPretrainOptions(width=8, embed_dim=16, text_width=64, text_layers=1,
                                  context_length=40, steps=25, batch_size=8, lr=2e-3,
                                  warmup_steps=2)  # fmt: skip
    result = pretrain_clip(captioned, tmp_path / "clip", options)
    card = json.loads((tmp_path / "clip" / "clip_pretrain.json").read_text())
    assert card["train_frames"] == 8 and card["examples"][0].startswith("a street photo")
    # 8 frames, 8 distinct captions, one batch: chance is log 8; the loss falls far below it.
    assert result.losses[0] > 0.8 * math.log(8)
    assert max(result.losses[-5:]) < 0.3 * math.log(8), result.losses
    assert 0.0 <= result.retrieval_top1 <= 1.0 and result.retrieval_chance == pytest.approx(0.25)
    tokenizer = CLIPTokenizer(result.vocabulary)
    assert len(tokenizer.encode("traffic sign")) == 2  # class names are whole words
    model = build_model(ModelConfig.model_validate({
        "backbone": {"type": "clip_rn50", "weights": str(result.weights)},
        "neck": {"type": "fpn", "out_channels": 32, "norm": "gn"},
        "adapters": [{"type": "lv_adapter", "tasks": ["semantic"], "heads": 4, "ffn_dim": 64,
                      "layers": 1, "clip_weights": str(result.weights),
                      "vocabulary": str(result.vocabulary)}],
        "tasks": {"semantic": {"head": {"channels": 16}}},
    }))  # fmt: skip
    saved = torch.load(result.weights, weights_only=True)
    assert torch.equal(model.backbone.conv1.weight, saved["visual.conv1.weight"])
    text = model.adapters[0].text_encoder
    assert torch.equal(text.text_projection, saved["text_projection"])


def test_schedule_and_padding() -> None:
    options = CLIPPretrainOptions(steps=10, warmup_steps=2)
    assert [round(lr_factor(s, options), 4) for s in (0, 1, 2, 6)] == [0.5, 1.0, 1.0, 0.5]
    batch = stack_images([torch.ones(3, 30, 40), torch.ones(3, 33, 20)])
    assert batch.shape == (2, 3, 64, 64)
    assert float(batch[0].sum()) == 3 * 30 * 40 and float(batch[1, :, 33:].abs().sum()) == 0
