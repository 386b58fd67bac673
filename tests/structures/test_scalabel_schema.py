"""Every Scalabel JSON DriveMTL writes loads in the official `scalabel.label.io.load` (0.3.1).

Checked without the official package: data/scalabel_schema.json transcribes the pydantic 1 models
of scalabel/label/typing.py (required / nullable fields, field types, the coercions pydantic 1
applies) and the small checker below applies it to the files written by the synthetic world
(`drivemtl data synth`), the prediction writer (`drivemtl predict`) and the pseudo-labeller
(`drivemtl pseudo-label`). benchmarks/official_schema_check.py compares the transcription with
the real models and loads the same kinds of files with the real loader (run by hand).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn

from drivemtl.data.synthetic import generate_dataset
from drivemtl.data.writers import PredictionWriter, prediction_to_frame
from drivemtl.engine.pseudo_label import PseudoLabelRules, write_pseudo_labels
from drivemtl.structures import FramePrediction, Instances, SampleMeta
from drivemtl.structures.batch import Batch
from drivemtl.structures.scalabel import save_frames

sys.path.insert(0, str(Path(__file__).parents[1] / "engine"))
from engine_fixtures import make_config, write_tiny_data

SCHEMA = json.loads((Path(__file__).parent / "data" / "scalabel_schema.json").read_text())
MODELS: dict[str, dict[str, dict[str, Any]]] = SCHEMA["models"]
TRUE_FALSE = {"0", "off", "f", "false", "n", "no", "1", "on", "t", "true", "y", "yes"}


# ----------------------------------------------------------------------------- checker
def _is_float(value: Any) -> bool:
    if isinstance(value, (bool, int, float)):
        return True
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return isinstance(value, str)


def _is_int(value: Any) -> bool:
    if isinstance(value, (bool, int, float)):
        return value == value and abs(value) != float("inf")
    try:
        int(value)
    except (TypeError, ValueError):
        return False
    return isinstance(value, str)


SCALARS = {
    "str": lambda v: isinstance(v, (str, bool, int, float)),
    "float": _is_float,
    "int": _is_int,
    "bool": lambda v: (
        isinstance(v, bool)
        or (isinstance(v, (int, float)) and v in (0, 1))
        or (isinstance(v, str) and v.lower() in TRUE_FALSE)
    ),
}


def check(value: Any, kind: Any, where: str) -> list[str]:
    """Why `value` would not load as `kind` (empty when it would), each naming its place."""
    if isinstance(kind, str):
        return [] if SCALARS[kind](value) else [f"{where}: {value!r} is not a valid {kind}"]
    ((form, arg),) = kind.items()
    if form == "model":
        return check_model(value, arg, where)
    if form == "union":
        results = [check(value, option, where) for option in arg]
        return [] if any(not r for r in results) else results[0]
    if form == "list":
        if not isinstance(value, list):
            return [f"{where}: expected a list, got {value!r}"]
        return [e for i, item in enumerate(value) for e in check(item, arg, f"{where}[{i}]")]
    if form == "tuple":
        if not isinstance(value, list) or len(value) != len(arg):
            return [f"{where}: expected a list of {len(arg)}, got {value!r}"]
        return [
            e
            for i, (v, k) in enumerate(zip(value, arg, strict=True))
            for e in check(v, k, f"{where}[{i}]")
        ]
    if form == "dict":
        if not isinstance(value, dict):
            return [f"{where}: expected an object, got {value!r}"]
        return [e for key, v in value.items() for e in check(v, arg, f"{where}.{key}")]
    raise AssertionError(f"unknown schema form {form!r}")


def check_model(value: Any, model: str, where: str) -> list[str]:
    """Errors of one object against a model: required keys, nulls, then each field's type."""
    if not isinstance(value, dict):
        return [f"{where}: expected a {model} object, got {value!r}"]
    errors = []
    for name, spec in MODELS[model].items():
        place = f"{where}.{name}"
        if name not in value:
            if spec["required"]:
                errors.append(f"{place}: missing ({model} requires it)")
        elif value[name] is None:
            if not spec["nullable"]:
                errors.append(f"{place}: null is not allowed")
        else:
            errors += check(value[name], spec["type"], place)
    return errors


def check_file(path: Path) -> list[str]:
    """What `scalabel.label.io.load` would reject in a JSON file: a frame list or a Dataset."""
    data = json.loads(path.read_text(encoding="utf-8"))
    if isinstance(data, list):
        return [e for i, f in enumerate(data) for e in check_model(f, "Frame", f"{path.name}[{i}]")]
    return check_model(data, "Dataset", path.name)


def _keys(path: Path) -> set[str]:
    """Every label field present in a frame-list file (to see what a check covered)."""
    frames = json.loads(path.read_text(encoding="utf-8"))
    return {key for frame in frames for label in frame.get("labels") or [] for key in label}


# ----------------------------------------------------------------------------- tests
def test_checker_applies_the_pydantic_rules() -> None:
    good = {"name": 7, "extra": [1], "attributes": {"weather": "clear", "x": 1.5}, "labels": [
        {"id": 3, "attributes": {"occluded": "yes", "n": 2}, "box2d": {"x1": "1.5", "y1": True,
         "x2": 3, "y2": 4.0}, "poly2d": [{"vertices": [[0, 1]], "types": "L", "closed": 1}],
         "rle": {"counts": "ab", "size": [2, 3]},
         "graph": {"nodes": [{"location": [1, 2, 0.5], "category": "head", "id": "n0"}],
                   "edges": []}},
    ]}  # fmt: skip
    assert check_model(good, "Frame", "f") == []
    bad_cases = {
        "f.labels[0].id: missing": {"labels": [{"category": "car"}]},
        "f.labels[0].graph.nodes[0].id: missing": {"labels": [{"id": "a", "graph": {
            "nodes": [{"location": [1, 2], "category": "head"}], "edges": []}}]},
        "f.labels[0].graph.edges: missing": {"labels": [{"id": "a", "graph": {"nodes": []}}]},
        "f.labels[0].poly2d[0].vertices[0]: expected a list of 2": {"labels": [{"id": "a",
            "poly2d": [{"vertices": [[0, 1, 2]], "types": "L", "closed": False}]}]},
        "f.labels[0].rle.size: expected a list of 2": {"labels": [{"id": "a",
            "rle": {"counts": "x", "size": [1, 2, 3]}}]},
        "f.labels[0].attributes.tags: ['x'] is not a valid bool": {"labels": [{"id": "a",
            "attributes": {"tags": ["x"]}}]},
        "f.labels[0].poly2d[0].closed: 2 is not a valid bool": {"labels": [{"id": "a",
            "poly2d": [{"vertices": [], "types": "", "closed": 2}]}]},
        "f.size.width: null is not allowed": {"size": {"width": None, "height": 2}},
        "f.name: missing": {},
    }  # fmt: skip
    for message, frame in bad_cases.items():
        errors = check_model(
            {"name": "x", **frame} if "name" not in message else frame, "Frame", "f"
        )
        assert errors and errors[0].startswith(message), (message, errors)


def test_synthetic_labels_load(tmp_path: Path) -> None:
    roots = [
        generate_dataset(tmp_path / "all", "all", num_frames=3, size=(96, 54), seed=7, progress=False),
        generate_dataset(tmp_path / "bdd", "bdd-sets", num_frames=6, size=(96, 54), seed=2, progress=False),
    ]  # fmt: skip
    files = sorted(p for root in roots for p in root.rglob("*.json"))
    assert len(files) == 4
    for path in files:
        assert check_file(path) == [], path
    assert {"box2d", "poly2d", "graph", "attributes"} <= set().union(*map(_keys, files))


def _rich_prediction(
    name: str, video: str | None = None, index: int | None = None
) -> FramePrediction:
    masks = torch.zeros(2, 6, 8, dtype=torch.bool)
    masks[0, 1:3, 1:4] = True
    masks[1, 2:5, 3:7] = True
    meta = SampleMeta(name=name, image_set="s", orig_size=(6, 8), video=video, frame_index=index)
    keypoints = torch.rand(1, 18, 3, generator=torch.Generator().manual_seed(0)) * 5
    return FramePrediction(
        meta=meta,
        tags=torch.tensor([2, 6, 0]),
        detections=Instances(
            boxes=torch.tensor([[1.0, 2.0, 3.5, 4.0], [0.0, 0.0, 2.0, 2.0]]),
            classes=torch.tensor([2, 0]),
            scores=torch.tensor([0.75, 0.2]),
            track_ids=torch.tensor([41, -1]),
        ),
        instances=Instances(
            boxes=torch.tensor([[1.0, 1, 4, 3], [3, 2, 7, 5]]),
            classes=torch.tensor([0, 2]),
            scores=torch.tensor([0.4, 0.9]),
            masks=masks,
        ),
        poses=Instances(
            boxes=torch.tensor([[0.0, 0, 5, 5]]),
            classes=torch.tensor([0]),
            scores=torch.tensor([0.6]),
            keypoints=keypoints,
        ),
        semantic=torch.zeros(6, 8, dtype=torch.int64),
    )


def test_prediction_export_loads(tmp_path: Path) -> None:
    writer = PredictionWriter(tmp_path)
    writer.add(_rich_prediction("vid/vid-0000003.jpg", "vid", 3))
    writer.add(_rich_prediction("b.jpg"))
    path = writer.close()
    assert check_file(path) == []
    assert {"box2d", "rle", "graph", "score"} <= _keys(path)


class _TagTeacher(nn.Module):
    """A teacher that predicts the same tags for every frame (no network)."""

    def __init__(self) -> None:
        super().__init__()
        self.tasks: dict[str, nn.Module] = {}
        self.support: dict[str, nn.Module] = {}

    def predict(self, batch: Batch, tasks: list[str]) -> list[FramePrediction]:
        return [FramePrediction(meta=m, tags=torch.tensor([1, 2, 0])) for m in batch.metas]


def test_pseudo_labels_load(tmp_path: Path) -> None:
    config = make_config(write_tiny_data(tmp_path / "data"), [{"name": "t", "steps": 1}])
    write_pseudo_labels(config, _TagTeacher(), ["tag"], ["tagging"], tmp_path / "pl")
    path = tmp_path / "pl" / "tag" / "labels.json"
    frames = json.loads(path.read_text(encoding="utf-8"))
    assert len(frames) == 8 and all(f["attributes"]["weather"] for f in frames)
    assert check_file(path) == []
    # the JSON the pseudo-labeller builds for box / pose tasks, with its score thresholds
    rules = PseudoLabelRules()
    json_tasks = ["tagging", "detection", "pose"]
    frames_out = [
        prediction_to_frame(_rich_prediction(f"p{i}.jpg"), tasks=json_tasks,
                            min_score=rules.box_score, min_joint_score=rules.joint_score)
        for i in range(2)
    ]  # fmt: skip
    save_frames(frames_out, tmp_path / "boxes.json")
    assert check_file(tmp_path / "boxes.json") == []
    assert {"box2d", "graph"} <= _keys(tmp_path / "boxes.json")


def test_schema_transcription_is_well_formed() -> None:
    def leaves(kind: Any) -> list[Any]:
        if isinstance(kind, str):
            return [kind]
        ((form, arg),) = kind.items()
        if form == "model":
            return [arg]
        return [k for a in (arg if isinstance(arg, list) else [arg]) for k in leaves(a)]

    for model, fields in MODELS.items():
        for name, spec in fields.items():
            assert set(spec) == {"type", "required", "nullable"}, (model, name)
            assert not (spec["required"] and spec["nullable"]), (model, name)
            assert all(k in SCALARS or k in MODELS for k in leaves(spec["type"])), (model, name)
