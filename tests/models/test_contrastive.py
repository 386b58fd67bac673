"""CLIP-shaped model and contrastive loss: float64 loop references and an OpenAI-key round trip."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from drivemtl.models.backbones.clip_resnet import ModifiedResNet, load_clip_resnet
from drivemtl.models.language import CLIPTextEncoder, load_clip_text
from drivemtl.models.language.contrastive import CLIPModel, contrastive_loss, same_caption


def _loop_loss(logits: list[list[float]], groups: list[int]) -> float:
    """Symmetric cross entropy with the target spread over equal-caption pairs, by loops."""
    n = len(logits)

    def side(rows: list[list[float]]) -> float:
        total = 0.0
        for i in range(n):
            norm = math.log(sum(math.exp(v) for v in rows[i]))
            positives = [j for j in range(n) if groups[j] == groups[i]]
            total += -sum((rows[i][j] - norm) / len(positives) for j in positives)
        return total / n

    columns = [[logits[j][i] for j in range(n)] for i in range(n)]
    return (side(logits) + side(columns)) / 2


def test_contrastive_loss_against_loops() -> None:
    torch.manual_seed(0)
    logits = torch.randn(5, 5, dtype=torch.float64) * 3
    eye = _loop_loss(logits.tolist(), [0, 1, 2, 3, 4])
    assert float(contrastive_loss(logits)) == pytest.approx(eye, abs=1e-12)
    captions = ["a", "b", "a", "c", "b"]
    same = same_caption(captions)
    assert same.tolist()[0] == [True, False, True, False, False]
    grouped = _loop_loss(logits.tolist(), [0, 1, 0, 2, 1])
    assert float(contrastive_loss(logits, same)) == pytest.approx(grouped, abs=1e-12)
    with pytest.raises(ValueError, match="square"):
        contrastive_loss(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="matching itself"):
        contrastive_loss(torch.zeros(2, 2), torch.zeros(2, 2, dtype=torch.bool))


def _tiny_clip() -> CLIPModel:
    torch.manual_seed(1)
    visual = ModifiedResNet((1, 1, 1, 1), 8, 16, heads=2, input_resolution=64)
    text = CLIPTextEncoder.build(width=64, layers=1, heads=1, context_length=12, vocab_size=40,
                                 output_dim=16)  # fmt: skip
    return CLIPModel(visual, text).eval()


def test_logits_are_scaled_cosines() -> None:
    model = _tiny_clip()
    images = torch.randn(2, 3, 64, 64)
    tokens = torch.tensor([[38, 5, 6, 39] + [0] * 8, [38, 7, 39] + [0] * 9])
    with torch.no_grad():
        a = model.visual.embed(images).double()
        b = model.text.encode(tokens).double()
        expected = [[math.exp(math.log(1 / 0.07)) * float(a[i] @ b[j] / a[i].norm() / b[j].norm())
                     for j in range(2)] for i in range(2)]  # fmt: skip
        assert torch.allclose(
            model(images, tokens).double(), torch.tensor(expected, dtype=torch.float64), atol=1e-4
        )


def test_openai_state_dict_round_trip(tmp_path: Path) -> None:
    model = _tiny_clip()
    state = model.openai_state_dict()
    assert "visual.attnpool.c_proj.weight" in state and "logit_scale" in state
    assert "transformer.resblocks.0.attn.in_proj_weight" in state
    torch.save(state, tmp_path / "clip.pt")
    visual = load_clip_resnet(tmp_path / "clip.pt", heads=2)
    text = load_clip_text(tmp_path / "clip.pt")
    for name, value in visual.state_dict().items():
        assert torch.equal(value, state[f"visual.{name}"]), name
    for name, value in text.state_dict().items():
        assert torch.equal(value, state[name]), name
    assert (visual.width, visual.output_dim, visual.input_resolution) == (8, 16, 64)


def test_mismatched_towers_are_refused() -> None:
    visual = ModifiedResNet((1, 1, 1, 1), 8, 16, heads=2, input_resolution=64)
    text = CLIPTextEncoder.build(width=64, layers=1, heads=1, context_length=8, vocab_size=10,
                                 output_dim=32)  # fmt: skip
    with pytest.raises(ValueError, match="embedding size 16 differs from the text's 32"):
        CLIPModel(visual, text)
