"""Dataset YAML: typed sets, label settings, unknown keys and tasks rejected with their location."""

from __future__ import annotations

import pytest

from drivemtl.config import ConfigError
from drivemtl.data.config import data_config_from_card, load_data_config
from drivemtl.engine.run_config import RunConfig, load_run_config

YAML = """
sets:
  det:
    reader: bdd100k
    root: /data/bdd100k
    tasks: [detection, tagging]
    paths: {images: "images/100k/{split}", labels: "labels/det_20/det_{split}.json"}
  seg:
    root: /data/bdd100k
    tasks: [semantic]
    subset: {frames: 100}
label_settings:
  disjoint_balance:
    det: {tasks: [detection], subset: {frames: 100}}
    seg: {}
label_setting: disjoint_balance
on_error: skip
transforms: {heights: [600, 720], crop: [512, 1024]}
"""


def test_load_data_yaml(tmp_path):
    path = tmp_path / "data.yaml"
    path.write_text(YAML)
    cfg = load_data_config(path, ["transforms.flip=0.0"])
    assert cfg.sets["det"].paths["labels"] == "labels/det_20/det_{split}.json"
    assert cfg.sets["seg"].reader == "bdd100k" and cfg.sets["seg"].subset.frames == 100
    assert cfg.label_settings["disjoint_balance"]["det"].tasks == ["detection"]
    assert cfg.on_error == "skip" and cfg.transforms.crop == (512, 1024)
    assert cfg.transforms.flip == 0.0 and cfg.transforms.mean == (123.675, 116.28, 103.53)


def test_errors_name_the_key(tmp_path):
    path = tmp_path / "data.yaml"
    path.write_text(YAML.replace("tasks: [semantic]", "tasks: [semantics]"))
    with pytest.raises(ConfigError, match=r"sets\.seg\.tasks.*unknown task\(s\) \['semantics'\]"):
        load_data_config(path)
    path.write_text(YAML.replace("on_error: skip", "on_error: ignore"))
    with pytest.raises(ConfigError, match="on_error"):
        load_data_config(path)
    path.write_text(YAML.replace("    subset: {frames: 100}\n", "    subsett: 3\n"))
    with pytest.raises(ConfigError, match="subsett"):
        load_data_config(path)


def test_run_config_has_a_data_section(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("data:\n" + "\n".join("  " + line for line in YAML.splitlines()))
    run = load_run_config(path)
    assert isinstance(run, RunConfig) and run.data.sets["det"].tasks == ["detection", "tagging"]
    assert RunConfig().data is None


def test_config_from_dataset_card(tmp_path):
    (tmp_path / "dataset.yaml").write_text(
        "sets:\n  tracking: {tasks: [mot, mots], frames: 8, videos: true, labels: labels.json}\n"
        "  detection: {tasks: [detection], frames: 4, videos: false}\n"
    )
    cfg = data_config_from_card(tmp_path, clip={"window": 3}, on_error="skip")
    assert cfg.sets["tracking"].root == tmp_path / "tracking"
    assert cfg.sets["tracking"].clip.window == 3 and cfg.sets["tracking"].clip.sampling == "window"
    assert cfg.sets["detection"].clip is None
    assert cfg.on_error == "skip"
    with pytest.raises(FileNotFoundError, match="dataset card not found"):
        data_config_from_card(tmp_path / "nothing")
