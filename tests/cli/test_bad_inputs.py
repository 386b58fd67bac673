"""A catalogue of bad inputs (output paths, run folders, checkpoints, configs, data) given to the
`drivemtl` command: each must exit 2 with one error line on stderr (after any log lines, never a traceback)
that names the culprit, leave no
partial output behind and overwrite nothing of the user's. Under `--verbose` the traceback is
shown as well.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "engine"))
from engine_fixtures import make_config, write_tiny_data

from drivemtl.cli.main import main
from drivemtl.config import dump_config
from drivemtl.engine.run_config import load_run_config
from drivemtl.engine.trainer import config_fingerprint, run_recipe

STAGE = {"name": "joint", "steps": 1, "batch_size": 2, "optimizer": {"lr": 1e-3}}


class Payload:
    """Unpickling this creates `marker`: the code a hostile weights file would run."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@dataclass
class World:
    root: Path
    config: Path
    weights: Path

    def file(self, name: str, text: str = "mine\n") -> Path:
        path = self.root / "user" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return path


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    root = tmp_path_factory.mktemp("bad_inputs")
    data = write_tiny_data(root / "data")
    config = root / "run.yaml"
    dump_config(make_config(data, [STAGE]), config)
    run = run_recipe(load_run_config(config), root / "trained", progress=False)
    return World(root, config, run.final_weights)


def _not_a_run(w: World) -> list[str]:
    folder = w.file("notes/config.yaml").parent
    return ["train", str(w.config), "--out", str(folder), "--no-progress"]


def _corrupt_run_json(w: World) -> list[str]:
    folder = w.file("broken_run/run.json", '{"stages": {').parent
    return ["train", str(w.config), "--out", str(folder), "--resume", "--no-progress"]


def _empty_checkpoint(w: World) -> list[str]:
    folder = w.root / "half_run"
    state = {"fingerprint": config_fingerprint(load_run_config(w.config)), "stages": {}}
    w.file("../half_run/run.json", json.dumps(state))
    w.file("../half_run/stages/00-joint/checkpoints/last.ckpt", "")
    shutil.copy(w.config, folder / "config.yaml")
    return ["train", str(w.config), "--out", str(folder), "--resume", "--no-progress"]


def _hostile_backbone(w: World) -> list[str]:
    evil = w.root / "user" / "evil.pth"
    evil.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"conv1.weight": Payload(w.root / "payload-ran")}, evil)
    out = w.root / "never_hostile"
    return ["train", str(w.config), "--out", str(out), "--no-progress",
            "--set", f"model.backbone.weights={evil}"]  # fmt: skip


def _nonfinite(w: World) -> list[str]:
    return ["train", str(w.config), "--out", str(w.root / "exploding"), "--no-progress",
            "--set", "recipe.stages.0.steps=30", "--set", "recipe.stages.0.optimizer.lr=1e30",
            "--set", "train.max_nonfinite_steps=1"]  # fmt: skip


def _empty_labels(w: World) -> list[str]:
    root = w.root / "user" / "tag"
    shutil.copytree(w.root / "data" / "tag", root, dirs_exist_ok=True)
    (root / "labels.json").write_text("[]")
    return ["train", str(w.config), "--out", str(w.root / "never_empty"), "--no-progress",
            "--set", f"data.sets.tag.root={root}"]  # fmt: skip


def _predict(out: Path, w: World) -> list[str]:
    return ["predict", str(w.config), "--checkpoint", str(w.weights), "--source",
            str(w.root / "data" / "seg" / "images"), "--out", str(out), "--no-progress"]  # fmt: skip


def _eval(w: World, *extra: str) -> list[str]:
    return ["eval", str(w.config), "--checkpoint", str(w.weights), "--no-progress", *extra]


def _truncated_weights(w: World) -> list[str]:
    half = w.root / "user" / "half.safetensors"
    half.parent.mkdir(parents=True, exist_ok=True)
    half.write_bytes(w.weights.read_bytes()[:100])
    return ["eval", str(w.config), "--checkpoint", str(half), "--no-progress"]


# id -> (argv builder, culprit named in the one line, paths that must not exist afterwards)
CASES: dict[str, tuple[Callable[[World], list[str]], str, list[str]]] = {
    "train --out is a file": (
        lambda w: ["train", str(w.config), "--out", str(w.file("a.txt")), "--no-progress"],
        r"a\.txt: is a file, not a folder", [],
    ),
    "train --out under a file": (
        lambda w: ["train", str(w.config), "--out", str(w.file("b.txt") / "run")],
        r"b\.txt is a file, so the folder cannot be created", [],
    ),
    "train --out a folder that is not a run": (
        _not_a_run, r"notes: the folder is not empty \(config\.yaml", [],
    ),
    "train --resume, corrupt run.json": (
        _corrupt_run_json, r"broken_run/run\.json: corrupt run record", [],
    ),
    "train --resume, zero-byte last.ckpt": (
        _empty_checkpoint, r"cannot resume: .*last\.ckpt: empty file \(0 bytes\)", [],
    ),
    "train, hostile model.backbone.weights": (
        _hostile_backbone, r"evil\.pth: not loadable with torch\.load\(weights_only=True\)",
        ["payload-ran", "never_hostile"],
    ),
    "train, unknown config key": (
        lambda w: ["train", str(w.config), "--set", "model.backbone.widht=8"],
        r"widht", [],
    ),
    "train, an empty labels.json": (
        _empty_labels, r"tag/labels\.json: no frames in the label JSON", ["never_empty"],
    ),
    "train, the loss explodes": (_nonfinite, r"joint: loss was NaN / Inf", []),
    "predict --out holds predictions.json": (
        lambda w: _predict(w.file("preds/predictions.json").parent, w),
        r"preds/predictions\.json already exists; pass --overwrite", ["user/preds/overlays"],
    ),
    "predict --out is a file": (
        lambda w: _predict(w.file("c.txt"), w), r"c\.txt: is a file, not a folder", [],
    ),
    "eval, weights of another model": (
        lambda w: _eval(w, "--set", "model.tasks.semantic.head.channels=24"),
        r"final\.safetensors: checkpoint does not fit the model", [],
    ),
    "eval, truncated weights file": (
        _truncated_weights, r"half\.safetensors: cannot read checkpoint", [],
    ),
}  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_line_naming_the_culprit(world: World, case: str, capsys) -> None:
    build, culprit, absent = CASES[case]
    argv = build(world)
    user = {p: p.read_bytes() for p in (world.root / "user").rglob("*") if p.is_file()}
    assert main(argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()  # log lines may come first
    err = lines[-1]
    assert err.startswith("error: "), lines
    assert not any("Traceback" in line or line.startswith("  File ") for line in lines), lines
    assert re.search(culprit, err), err
    for name in absent:
        assert not (world.root / name).exists(), name
    for path, content in user.items():  # nothing of the user's overwritten
        assert path.read_bytes() == content, path


def test_verbose_shows_the_traceback_too(world: World, capsys) -> None:
    assert main(["--verbose", *CASES["train --out is a file"][0](world)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and "is a file, not a folder" in err.splitlines()[-1]
