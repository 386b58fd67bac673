"""The model card: what it records, and the refusal of a config that is not the exported one."""

from __future__ import annotations

import hashlib
import json

import pytest

from drivemtl.engine.run_config import RunConfig, load_run_config
from drivemtl.export.card import CARD_NAME, check_config, read_card
from drivemtl.export.errors import ExportError
from drivemtl.structures.bdd import SEMANTIC_CLASSES, THING_CLASSES


def test_card_records_graphs_input_classes_version_and_weights_hash(tiny_export):
    config_path, weights, _, folder = tiny_export
    card = read_card(folder)
    assert card["weights_sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert card["input"]["layout"] == "NCHW" and card["input"]["size_divisor"] == 32
    assert card["input"]["mean"] == [123.675, 116.28, 103.53]
    assert card["input"]["std"] == [58.395, 57.12, 57.375]
    assert card["tasks"]["semantic"]["classes"] == list(SEMANTIC_CLASSES)
    assert card["tasks"]["detection"]["classes"] == list(THING_CLASSES)
    assert card["tasks"]["tagging"]["attributes"]["timeofday"] == [
        "daytime", "night", "dawn/dusk", "undefined"
    ]  # fmt: skip
    assert card["tasks"]["lanes"]["branches"] == {"category": 9, "direction": 3, "style": 3}
    assert len(card["tasks"]["pose"]["joints"]) == 18
    assert card["config"]["model"] == load_run_config(config_path).model.model_dump(mode="json")
    outputs = {o["name"]: o for o in card["graphs"]["network"]["outputs"]}
    assert outputs["semantic.logits"]["shape"] == ["batch", 19, "height", "width"]
    assert outputs["detection.rpn.objectness.p6"]["shape"] == [
        "batch", 3, "ceil(height/64)", "ceil(width/64)"
    ]  # fmt: skip
    box = {o["name"]: o["shape"] for o in card["graphs"]["detection"]["outputs"]}
    assert box == {"class_logits": ["rois", 9], "box_deltas": ["rois", 32]}
    assert card["graphs"]["instance"]["outputs"][0]["shape"] == ["rois", 8, 28, 28]
    assert card["opset"] >= 17 and card["drivemtl_version"]


def test_a_config_of_another_model_is_refused_with_what_differs(tiny_export):
    config_path, _, _, folder = tiny_export
    data = load_run_config(config_path).model_dump(mode="json")
    check_config(read_card(folder), RunConfig.model_validate(data), folder)  # the same: accepted
    data["model"]["tasks"]["detection"]["head"]["num_classes"] = 10
    data["model"]["tasks"]["semantic"]["head"]["channels"] = 32
    other = RunConfig.model_validate(data)
    with pytest.raises(ExportError) as info:
        check_config(read_card(folder), other, folder)
    message = str(info.value)
    assert f"{folder / CARD_NAME}: the ONNX model was exported from another model" in message
    assert "classes of detection: 8 in the export, 10 in the config" in message
    assert "model.tasks.detection.head.num_classes: '(default)' in the export, 10 in" in message
    assert "model.tasks.semantic.head.channels: 16 in the export, 32 in the config" in message
    del data["model"]["tasks"]["edges"]
    with pytest.raises(ExportError, match=r"tasks \[.*'edges'.*\] in the export, \["):
        check_config(read_card(folder), RunConfig.model_validate(data), folder)


def test_a_folder_without_a_valid_card_is_refused(tmp_path):
    with pytest.raises(ExportError, match=r"model_card\.json: missing"):
        read_card(tmp_path)
    (tmp_path / CARD_NAME).write_text(json.dumps({"format": "other/1"}))
    with pytest.raises(ExportError, match=r"format 'other/1', expected 'drivemtl-onnx/1'"):
        read_card(tmp_path)
    (tmp_path / CARD_NAME).write_text("{not json")
    with pytest.raises(ExportError, match="not valid JSON"):
        read_card(tmp_path)
