"""Checkpoint fitting and sequential batching of `evaluation.model_eval`."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from drivemtl.evaluation.model_eval import ModelEvalError, SequentialSetBatches, load_checkpoint
from drivemtl.evaluation.vtda import vtda_scores


def _net() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))


def test_exact_fit_loads_and_lightning_prefix_is_removed(tmp_path: Path) -> None:
    source, target = _net(), _net()
    with torch.no_grad():
        source[0].weight.fill_(0.25)
    state = {f"model.{k}": v for k, v in source.state_dict().items()}
    del state["model.1.num_batches_tracked"]  # older checkpoints lack it: fine
    torch.save(state, tmp_path / "w.pt")
    load_checkpoint(target, tmp_path / "w.pt")
    assert torch.equal(target[0].weight, source[0].weight)


@pytest.mark.parametrize(
    ("edit", "words"),
    [
        (lambda s: s.pop("0.bias"), "1 model tensors missing (e.g. 0.bias)"),
        (lambda s: s.update(extra=torch.zeros(1)), "1 unknown tensors (e.g. extra)"),
        (lambda s: s.update({"0.weight": torch.zeros(4, 3, 5, 5)}), "shape mismatches"),
    ],
)
def test_mismatch_is_one_line_naming_the_file(tmp_path: Path, edit, words: str) -> None:
    state = dict(_net().state_dict())
    edit(state)
    path = tmp_path / "w.safetensors"
    save_file(state, str(path))
    with pytest.raises(ModelEvalError) as info:
        load_checkpoint(_net(), path)
    message = str(info.value)
    assert message.startswith(str(path)) and words in message and "\n" not in message


def test_unreadable_checkpoint(tmp_path: Path) -> None:
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a file")
    with pytest.raises(ModelEvalError, match=r"bad\.safetensors: cannot read"):
        load_checkpoint(_net(), bad)
    with pytest.raises(ModelEvalError, match="not found"):
        load_checkpoint(_net(), tmp_path / "missing.safetensors")


def test_sequential_batches_never_mix_sets() -> None:
    sampler = SequentialSetBatches([range(0, 5), range(5, 7)], batch_size=2)
    assert list(sampler) == [[0, 1], [2, 3], [4], [5, 6]]
    assert len(sampler) == 4
    with pytest.raises(ModelEvalError):
        SequentialSetBatches([range(3)], 0)


def test_vtda_inputs_are_read_under_evaluator_keys() -> None:
    scores = vtda_scores(
        {"tagging": {"acc/weather": 80.0}, "drivable": {"VTD_mIoU": 70.0, "mIoU": 60.0}}
    )
    assert scores == {"tagging/weather": 80.0, "drivable/mIoU": 70.0}
