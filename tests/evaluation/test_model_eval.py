"""Checkpoint fitting, sequential batching and frame selection of `evaluation.model_eval`."""

from __future__ import annotations

import logging
import math
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import save_file
from torch import nn

from drivemtl.data.synthetic import generate_dataset
from drivemtl.engine.checkpoint import save_weights
from drivemtl.engine.run_config import RunConfig, load_run_config
from drivemtl.evaluation.model_eval import (
    ModelEvalError,
    SequentialSetBatches,
    evaluate_model,
    frames_line,
    load_checkpoint,
)
from drivemtl.evaluation.vtda import vtda_scores
from drivemtl.models import build_model


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


TASKS = ["tagging", "detection", "drivable"]


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A synthetic dataset whose `detection` set has 6 frames, and untrained weights for it."""
    tmp = tmp_path_factory.mktemp("model_eval")
    generate_dataset(tmp / "ds", "bdd-sets", num_frames=12, size=(128, 64), seed=5, progress=False)
    torch.manual_seed(0)
    save_weights(build_model(_config(tmp, {"root": str(tmp / "ds/detection")}).model),
                 tmp / "w.safetensors")  # fmt: skip
    return tmp


def _config(tmp: Path, *sets: dict, **data: object) -> RunConfig:
    """A run config of a tiny tagging / detection / drivable model over `sets` (named s0, s1...)."""
    raw = {
        "name": "model-eval",
        "model": {
            "backbone": {"type": "resnet18", "width": 8, "norm": "bn"},
            "neck": {"type": "fpn", "out_channels": 16, "norm": "gn"},
            "tasks": {
                "tagging": {},
                "detection": {"head": {"rpn": {"pre_nms_topk_test": 50, "post_nms_topk_test": 20},
                                       "roi": {"fc_dim": 32, "detections_per_image": 10}}},
                "drivable": {"head": {"channels": 16}},
            },
        },
        "data": {
            "sets": {f"s{k}": {"tasks": TASKS, **spec} for k, spec in enumerate(sets)},
            "transforms": {"heights": [64]},
            **data,
        },
    }  # fmt: skip
    path = tmp / "run.yaml"
    path.write_text(yaml.safe_dump(raw))
    return load_run_config(path)


def _same_metrics(a: dict[str, dict[str, float]], b: dict[str, dict[str, float]]) -> bool:
    """Equal metric tables (NaN equal to NaN)."""
    if a.keys() != b.keys() or any(a[t].keys() != b[t].keys() for t in a):
        return False
    return all(
        (math.isnan(a[t][k]) and math.isnan(b[t][k])) or math.isclose(a[t][k], b[t][k])
        for t in a
        for k in a[t]
    )


def test_a_skipped_frame_is_left_out_of_evaluation_and_counted(
    synthetic: Path, tmp_path: Path
) -> None:
    root = Path(shutil.copytree(synthetic / "ds/detection", tmp_path / "detection"))
    names = sorted(p.relative_to(root / "images").as_posix() for p in root.rglob("*.jpg"))
    assert len(names) == 6
    bad = names[3]
    (root / "images" / bad).write_bytes(b"not a JPEG")
    weights = synthetic / "w.safetensors"

    # batches of 3: the bad frame opens the second batch, so both runs batch the good frames alike
    cfg = _config(tmp_path, {"root": str(root), "splits": ["val"]}, on_error="skip")
    result = evaluate_model(cfg, weights, batch_size=3, progress=False, resources=False)
    assert result.frames == {"s0": 5} and result.skipped == {"s0": 1}
    assert frames_line(result.frames, result.skipped) == "frames: s0 5 (1 skipped)"

    good = tmp_path / "good.txt"
    good.write_text("\n".join(n for n in names if n != bad))
    clean = _config(tmp_path, {"root": str(root), "subset": {"names_file": str(good)}})
    expected = evaluate_model(clean, weights, batch_size=3, progress=False, resources=False)
    assert expected.frames == {"s0": 5} and expected.skipped == {"s0": 0}
    assert _same_metrics(result.metrics, expected.metrics), (result.metrics, expected.metrics)
    assert result.metrics["drivable"]["pAcc"] > 0  # a non-degenerate comparison


def test_a_split_read_from_sets_without_splits_is_warned_about_once(
    synthetic: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    split_root = tmp_path / "val" / "detection"
    split_root.parent.mkdir()
    split_root.symlink_to(synthetic / "ds/detection", target_is_directory=True)
    cfg = _config(
        tmp_path,
        {"root": str(synthetic / "ds/detection")},  # s0: the same frames for every split
        {"root": str(tmp_path / "{split}" / "detection")},  # s1: a folder per split
        {"root": str(synthetic / "ds/detection"), "splits": ["val"]},  # s2: declared
    )
    caplog.set_level(logging.WARNING, logger="drivemtl")
    weights = synthetic / "w.safetensors"
    evaluate_model(cfg, weights, batch_size=6, progress=False, resources=False, split="val")
    warnings = [r.getMessage() for r in caplog.records if "declare no `splits`" in r.getMessage()]
    assert len(warnings) == 1 and "s0" in warnings[0] and "s1" not in warnings[0]
    assert "s2" not in warnings[0] and "'val'" in warnings[0]
