import json
import os
import stat
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from drivemtl.models.weights import (
    WeightsError,
    fit_problems,
    load_metadata,
    load_weights,
    read_state_dict,
    save_weights,
)


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.head = nn.Linear(4, 2)


def test_save_writes_safetensors_and_json_then_loads_back(tmp_path):
    model = Tiny()
    weights, sidecar = save_weights(
        model, tmp_path / "run" / "model.safetensors", {"epoch": 3, "tasks": ["det"]}
    )
    assert weights.suffix == ".safetensors" and sidecar == tmp_path / "run" / "model.json"
    assert json.loads(sidecar.read_text()) == {"epoch": 3, "tasks": ["det"]}
    assert load_metadata(weights) == {"epoch": 3, "tasks": ["det"]}
    assert set(load_file(str(weights))) == set(model.state_dict())
    assert not [p for p in weights.parent.iterdir() if p.name.endswith(".tmp")]
    fresh = Tiny()
    report = load_weights(fresh, weights)
    assert report.ok and len(report.loaded) == len(model.state_dict())
    for key, value in model.state_dict().items():
        assert torch.equal(fresh.state_dict()[key], value)


def test_pth_with_prefix_map_and_readable_report(tmp_path):
    model = Tiny()
    state = {f"backbone.{k}": v for k, v in model.state_dict().items()}
    state["backbone.head.weight"] = torch.zeros(5, 4)  # wrong shape
    state["extra.thing"] = torch.zeros(1)
    del state["backbone.bn.running_var"]
    path = tmp_path / "ckpt.pth"
    torch.save({"state_dict": state, "epoch": 1}, path)  # Lightning-style wrapper
    target = Tiny()
    with pytest.raises(ValueError) as error:
        load_weights(target, path, prefix_map={"backbone.": ""})
    text = str(error.value)
    assert "shape mismatch: head.weight: checkpoint (5, 4) vs model (2, 4)" in text
    assert "missing in checkpoint: bn.running_var" in text
    assert "unexpected in checkpoint: extra.thing" in text
    with pytest.warns(UserWarning, match="shape mismatch"):
        report = load_weights(
            target, path, prefix_map={"backbone.": "", "extra.": None}, strict=False
        )
    assert report.missing == ["bn.running_var"] and report.unexpected == []
    assert report.dropped == ["extra.thing"]
    assert torch.equal(target.conv.weight, model.conv.weight)
    assert not torch.equal(target.head.weight, torch.zeros(2, 4))  # mismatched key untouched


def test_refuses_pickled_objects_and_bad_paths(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"weights": torch.zeros(1), "obj": Tiny()}, path)
    with pytest.raises(ValueError, match="weights_only=True"):
        read_state_dict(path)
    with pytest.raises(FileNotFoundError, match=r"nope\.pth"):
        read_state_dict(tmp_path / "nope.pth")
    (tmp_path / "w.npz").write_bytes(b"")
    with pytest.raises(ValueError, match="unknown weights format"):
        read_state_dict(tmp_path / "w.npz")
    with pytest.raises(ValueError, match=r"must end in \.safetensors"):
        save_weights(Tiny(), tmp_path / "x.pth", {})
    with pytest.raises(ValueError, match="JSON"):
        save_weights(Tiny(), tmp_path / "x.safetensors", {"bad": object()})
    assert not (tmp_path / "x.safetensors").exists()


def test_fit_problems_counts_each_kind_with_a_first_example():
    own = {
        "a.weight": torch.zeros(2, 3),
        "a.bias": torch.zeros(2),
        "bn.num_batches_tracked": torch.zeros(()),
    }
    assert fit_problems(own, {"a.weight": torch.ones(2, 3), "a.bias": torch.ones(2)}) == []
    state = {"a.weight": torch.ones(3, 3), "x": torch.ones(1), "y": torch.ones(1)}
    assert fit_problems(own, state) == [
        "1 model tensors missing (e.g. a.bias)",
        "2 unknown tensors (e.g. x)",
        "1 shape mismatches (e.g. a.weight (3, 3) vs model (2, 3))",
    ]


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_saved_weights_follow_the_users_umask(tmp_path: Path, umask: int, mode: int) -> None:
    old = os.umask(umask)
    try:
        weights, sidecar = save_weights({"w": torch.zeros(2)}, tmp_path / "m.safetensors")
    finally:
        os.umask(old)
    assert stat.S_IMODE(weights.stat().st_mode) == mode
    assert stat.S_IMODE(sidecar.stat().st_mode) == mode


def test_torchscript_archives_are_read_only_when_asked(tmp_path: Path) -> None:
    module = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.LayerNorm(2))
    path = tmp_path / "jit.pt"
    torch.jit.save(torch.jit.script(module), str(path))
    state = read_state_dict(path, torchscript=True)
    assert set(state) == set(module.state_dict())
    for key, value in module.state_dict().items():
        assert torch.equal(state[key], value)
    with pytest.raises(WeightsError, match=r"jit\.pt"):
        read_state_dict(path)  # a plain torch.load(weights_only=True) refuses the archive
    plain = tmp_path / "plain.pt"
    torch.save(module.state_dict(), plain)
    assert set(read_state_dict(plain, torchscript=True)) == set(state)  # plain files still load
