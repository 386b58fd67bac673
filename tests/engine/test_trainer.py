"""run_recipe end to end on CPU: exact resume (across a stage boundary and from the generation
before a corrupt checkpoint), the run directory and what it refuses, errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from engine_fixtures import KillAt, SimulatedKill, make_config, same_weights

from drivemtl.engine.checkpoint import CheckpointError, load_weights
from drivemtl.engine.plan import RecipeError
from drivemtl.engine.trainer import RunResult, run_recipe
from drivemtl.outputs import OutputError

STAGES = [
    {
        "name": "joint",
        "steps": 3,
        "sampler": "set_round_robin",
        "batch_size": 2,
        "optimizer": {"lr": 1e-3},
        "schedule": {"type": "cosine", "warmup_steps": 2},
        "loss_weighting": {"type": "dwa", "window": 2},
    },
    {
        "name": "adapt",
        "steps": 3,
        "sampler": "uniform",
        "batch_size": 2,
        "frozen": ["backbone.*"],
        "optimizer": {"type": "sgd", "lr": 1e-2},
        "loss_weighting": {"type": "uncertainty"},
    },
]


@pytest.mark.slow
def test_resume_is_exact_across_a_stage_boundary(tiny_data: Path, tmp_path: Path) -> None:
    config = make_config(tiny_data, STAGES, deterministic=True, checkpoint_every_n_steps=1)
    straight = run_recipe(config, tmp_path / "straight", progress=False)

    out = tmp_path / "interrupted"
    with pytest.raises(SimulatedKill):
        run_recipe(config, out, progress=False, callbacks=[KillAt("joint", 2)])
    assert (out / "stages" / "00-joint" / "checkpoints" / "last.ckpt").is_file()
    with pytest.raises(SimulatedKill):  # resume, finish `joint`, die inside `adapt`
        run_recipe(config, out, resume=True, progress=False, callbacks=[KillAt("adapt", 1)])
    resumed = run_recipe(config, out, resume=True, progress=False)

    assert [s.steps for s in resumed.stages] == [3, 3]
    same_weights(straight.stages[0].weights, resumed.stages[0].weights)
    same_weights(straight.final_weights, resumed.final_weights)
    # and training did move the weights
    first = load_weights(straight.stages[0].weights)
    final = load_weights(straight.final_weights)
    assert any(not torch.equal(first[k], final[k]) for k in first)


def test_run_directory_and_bad_input(tiny_data: Path, tmp_path: Path) -> None:
    config = make_config(tiny_data, [{**STAGES[0], "steps": 1}])
    result = run_recipe(config, tmp_path / "run", progress=False)
    assert isinstance(result, RunResult)
    for name in ("config.yaml", "dataset_card.yaml", "run.json", "final.safetensors"):
        assert (tmp_path / "run" / name).is_file(), name
    csv = tmp_path / "run" / "stages" / "00-joint" / "logs" / "csv" / "version_0" / "metrics.csv"
    header = csv.read_text().splitlines()[0].split(",")
    assert {"loss/total", "loss/semantic", "lr-AdamW/pg1", "weight/tagging"} <= set(header)

    with pytest.raises(RecipeError, match="already holds a run"):
        run_recipe(config, tmp_path / "run", progress=False)
    other = make_config(tiny_data, [{**STAGES[0], "steps": 2}])
    with pytest.raises(RecipeError, match="written by another config"):
        run_recipe(other, tmp_path / "run", resume=True, progress=False)
    with pytest.raises(RecipeError, match="holds no run"):
        run_recipe(config, tmp_path / "empty", resume=True, progress=False)

    bad_stages = [
        ({"tasks": ["depth"]}, r"tasks \['depth'\] are not tasks of the model"),
        ({"sets": ["kitti"]}, r"image sets \['kitti'\] are not in data.sets"),
        ({"sampler": "random"}, "unknown sampler 'random'"),
        (
            {"sampler_options": {"task_epochs": {}}},
            r"sampler 'set_round_robin' has no options \['task_epochs'\]",
        ),
        ({"trainable": ["adapter.*"]}, r"trainable pattern 'adapter\.\*' matches no parameter"),
        ({"trainable": ["neck.*"], "frozen": ["backbone.*"]}, "freezes no parameter"),
        ({"trainable": ["@adapter"]}, "pattern '@adapter': this model has no adapter stage"),
        ({"sets": ["seg"], "tasks": ["tagging"]}, "no set among .* is labelled for task 'tagging'"),
        ({"init": "missing.safetensors"}, "existing .safetensors file"),
    ]
    for change, message in bad_stages:
        bad = make_config(tiny_data, [{**STAGES[0], **change}])
        with pytest.raises(RecipeError, match=message):
            run_recipe(bad, tmp_path / "never", progress=False)
    assert not (tmp_path / "never").exists()  # every error came before any training


class _Payload:
    """Unpickling this object would create `marker`: the code a hostile checkpoint would run."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_resume_refuses_a_checkpoint_that_needs_unpickling_code(
    tiny_data: Path, tmp_path: Path
) -> None:
    config = make_config(tiny_data, [STAGES[0]], checkpoint_every_n_steps=1)
    out = tmp_path / "run"
    with pytest.raises(SimulatedKill):
        run_recipe(config, out, progress=False, callbacks=[KillAt("joint", 2)])
    last = out / "stages" / "00-joint" / "checkpoints" / "last.ckpt"
    state = torch.load(last, weights_only=True)  # the engine's own checkpoint loads safely
    marker = tmp_path / "payload-ran"
    state["planted"] = _Payload(marker)
    torch.save(state, last)
    with pytest.raises(
        CheckpointError, match=r"last\.ckpt: refused to resume from it: it holds objects"
    ):
        run_recipe(config, out, resume=True, progress=False)
    assert not marker.exists()


@pytest.mark.slow
def test_a_corrupt_last_checkpoint_falls_back_to_the_generation_before(
    tiny_data: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = make_config(tiny_data, [STAGES[0]], deterministic=True, checkpoint_every_n_steps=1)
    straight = run_recipe(config, tmp_path / "straight", progress=False)
    out = tmp_path / "run"
    with pytest.raises(SimulatedKill):
        run_recipe(config, out, progress=False, callbacks=[KillAt("joint", 2)])
    checkpoints = out / "stages" / "00-joint" / "checkpoints"
    assert (checkpoints / "previous.ckpt").is_file()  # two generations are kept
    data = (checkpoints / "last.ckpt").read_bytes()
    (checkpoints / "last.ckpt").write_bytes(data[: len(data) // 2])  # a kill inside the write
    with caplog.at_level("WARNING", logger="drivemtl"):
        resumed = run_recipe(config, out, resume=True, progress=False)
    assert "resuming from the generation before" in caplog.text
    assert "corrupt checkpoint" in caplog.text
    same_weights(straight.final_weights, resumed.final_weights)  # still exact

    broken = tmp_path / "broken"
    with pytest.raises(SimulatedKill):
        run_recipe(config, broken, progress=False, callbacks=[KillAt("joint", 1)])
    checkpoints = broken / "stages" / "00-joint" / "checkpoints"
    (checkpoints / "last.ckpt").write_bytes(b"")
    (checkpoints / "previous.ckpt").unlink(missing_ok=True)
    with pytest.raises(CheckpointError, match=r"cannot resume: .*last\.ckpt: empty file"):
        run_recipe(config, broken, resume=True, progress=False)


def test_run_folders_that_are_not_runs_are_left_alone(tiny_data: Path, tmp_path: Path) -> None:
    config = make_config(tiny_data, [{**STAGES[0], "steps": 1}])
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "config.yaml").write_text("my own notes\n")
    with pytest.raises(RecipeError, match=r"not empty \(config\.yaml.*pass --overwrite"):
        run_recipe(config, mine, progress=False)
    assert (mine / "config.yaml").read_text() == "my own notes\n"
    run_recipe(config, mine, progress=False, overwrite=True)
    assert (mine / "final.safetensors").is_file()

    with pytest.raises(OutputError, match="is a file, not a folder"):
        run_recipe(config, mine / "config.yaml", progress=False)
    with pytest.raises(OutputError, match=r"config\.yaml is a file, so the folder cannot"):
        run_recipe(config, mine / "config.yaml" / "run", progress=False)

    (mine / "run.json").write_text('{"stages": {')
    with pytest.raises(RecipeError, match=r"run\.json: corrupt run record"):
        run_recipe(config, mine, resume=True, progress=False)


def test_a_failed_start_leaves_nothing_and_blocks_no_rerun(tiny_data: Path, tmp_path: Path):
    too_big = make_config(tiny_data, [{**STAGES[0], "steps": 1, "batch_size": 64}])
    fresh = tmp_path / "fresh"
    with pytest.raises(RecipeError, match="give no batch"):
        run_recipe(too_big, fresh, progress=False)
    assert not fresh.exists()  # the folder this call created is gone again

    given = tmp_path / "given"
    given.mkdir()
    with pytest.raises(RecipeError, match="give no batch"):
        run_recipe(too_big, given, progress=False)
    assert (given / "run.json").is_file()
    good = make_config(tiny_data, [{**STAGES[0], "steps": 1}])
    assert run_recipe(good, given, progress=False).final_weights.is_file()  # replaced, not blocked
