from pathlib import Path

import pytest
import yaml

from drivemtl.config import ConfigError, dump_config, load_config, parse_override
from drivemtl.engine.run_config import RunConfig


def write(path: Path, data) -> Path:
    path.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return path


@pytest.fixture
def chain(tmp_path: Path) -> Path:
    (tmp_path / "bases").mkdir()
    write(
        tmp_path / "bases" / "root.yaml",
        {"name": "root", "seed": 1, "model": {"backbone": {"type": "resnet50", "norm": "gn"}}},
    )
    write(
        tmp_path / "bases" / "mid.yaml",
        {"_base_": ["root.yaml"], "seed": 2, "model": {"neck": {"out_channels": 128}}},
    )
    return write(
        tmp_path / "run.yaml",
        {
            "_base_": "bases/mid.yaml",
            "model": {"backbone": {"width": 32}, "tasks": {"semantic": {"loss_weight": 0.7}}},
        },
    )


def test_inheritance_merges_mappings_and_later_files_win(chain):
    cfg = load_config(chain, RunConfig)
    assert cfg.name == "root"
    assert cfg.seed == 2
    assert cfg.model.backbone.type == "resnet50"
    assert cfg.model.backbone.norm == "gn"
    assert cfg.model.backbone.width == 32
    assert cfg.model.neck.out_channels == 128
    assert cfg.model.tasks["semantic"].loss_weight == 0.7
    assert cfg.model.neck.type == "fpn"  # schema default filled in


def test_delete_replaces_a_mapping_instead_of_merging(tmp_path):
    write(tmp_path / "base.yaml", {"model": {"backbone": {"type": "resnet50", "width": 32}}})
    run = write(
        tmp_path / "run.yaml",
        {"_base_": ["base.yaml"], "model": {"backbone": {"_delete_": True, "norm": "gn"}}},
    )
    cfg = load_config(run, RunConfig)
    assert (cfg.model.backbone.type, cfg.model.backbone.width, cfg.model.backbone.norm) == (
        "resnet18",
        64,
        "gn",
    )


def test_overrides_are_typed_by_the_schema(chain):
    cfg = load_config(
        chain,
        RunConfig,
        overrides=[
            "name=007",
            "seed=5",
            "model.backbone.weights=/w/r50.pth",
            "model.tasks.depth.loss_weight=2.5",
        ],
    )
    assert cfg.name == "007"  # a str field keeps the raw text, not the int 7
    assert cfg.seed == 5
    assert cfg.model.backbone.weights == Path("/w/r50.pth")
    assert cfg.model.tasks["depth"].loss_weight == 2.5
    assert cfg.model.tasks["semantic"].loss_weight == 0.7


def test_parse_override_yaml_values():
    assert parse_override("model.tasks.semantic.head={a: 1, b: [2, 3]}", RunConfig) == (
        ["model", "tasks", "semantic", "head"],
        {"a": 1, "b": [2, 3]},
    )
    assert parse_override("model.backbone.weights=null", RunConfig)[1] is None


def test_unknown_key_in_file_names_file_key_and_known_keys(tmp_path):
    run = write(tmp_path / "run.yaml", {"model": {"backbone": {"widht": 32}}})
    with pytest.raises(ConfigError) as err:
        load_config(run, RunConfig)
    msg = str(err.value)
    assert str(run.resolve()) in msg
    assert "unknown key 'model.backbone.widht'" in msg
    assert "given 32 (int)" in msg
    assert "expected one of: dilation, frozen_stages, norm, type, weights, width" in msg


def test_wrong_type_names_the_base_file_that_set_it(chain, tmp_path):
    write(tmp_path / "bases" / "root.yaml", {"model": {"backbone": {"frozen_stages": "two"}}})
    with pytest.raises(ConfigError) as err:
        load_config(chain, RunConfig)
    msg = str(err.value)
    assert str((tmp_path / "bases" / "root.yaml").resolve()) in msg
    assert "key 'model.backbone.frozen_stages': got 'two' (str); expected a valid integer" in msg


def test_every_problem_is_listed(tmp_path):
    run = write(tmp_path / "run.yaml", {"seed": "x", "model": {"neck": {"norm": "bn"}}})
    with pytest.raises(ConfigError) as err:
        load_config(run, RunConfig)
    msg = str(err.value)
    assert "key 'seed'" in msg
    assert "key 'model.neck.norm': got 'bn' (str); expected 'gn' or 'none'" in msg


def test_override_errors_name_the_flag(chain):
    with pytest.raises(
        ConfigError,
        match=r"--set model.backbone.depth=3: unknown key 'model.backbone.depth'; expected one of: dilation, frozen_stages, norm, type, weights, width",
    ):
        load_config(chain, RunConfig, overrides=["model.backbone.depth=3"])
    with pytest.raises(
        ConfigError,
        match=r"--set seed=abc: key 'seed': got 'abc' \(str\); expected a valid integer",
    ):
        load_config(chain, RunConfig, overrides=["seed=abc"])
    with pytest.raises(ConfigError, match=r"--set seed: expected KEY=VALUE"):
        load_config(chain, RunConfig, overrides=["seed"])
    with pytest.raises(ConfigError, match=r"'seed' is a int value, it has no key 'x'"):
        load_config(chain, RunConfig, overrides=["seed.x=1"])


def test_missing_file_and_missing_base(tmp_path):
    with pytest.raises(ConfigError, match=r"config file not found: .*nope.yaml"):
        load_config(tmp_path / "nope.yaml", RunConfig)
    run = write(tmp_path / "run.yaml", {"_base_": ["gone.yaml"]})
    with pytest.raises(
        ConfigError, match=r"config file not found: .*gone.yaml \(listed in _base_ of .*run.yaml\)"
    ):
        load_config(run, RunConfig)


def test_base_cycle_and_bad_yaml(tmp_path):
    write(tmp_path / "a.yaml", {"_base_": ["b.yaml"]})
    write(tmp_path / "b.yaml", {"_base_": ["a.yaml"]})
    with pytest.raises(ConfigError, match="_base_ cycle"):
        load_config(tmp_path / "a.yaml", RunConfig)
    write(tmp_path / "bad.yaml", "model: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(tmp_path / "bad.yaml", RunConfig)
    write(tmp_path / "list.yaml", "- 1\n- 2\n")
    with pytest.raises(ConfigError, match="expected a mapping at the top level, got list"):
        load_config(tmp_path / "list.yaml", RunConfig)


def test_dump_round_trips_and_writes_atomically(chain, tmp_path):
    cfg = load_config(chain, RunConfig, overrides=["seed=9"])
    out = tmp_path / "run" / "config.yaml"
    text = dump_config(cfg, out)
    assert out.read_text() == text
    assert not list(out.parent.glob("*.tmp"))
    again = load_config(out, RunConfig)
    assert again == cfg


def test_overrides_index_into_lists(tmp_path):
    run = write(
        tmp_path / "run.yaml",
        {"recipe": {"stages": [{"name": "a", "steps": 5}, {"name": "b", "steps": 7}]}},
    )
    cfg = load_config(
        run, RunConfig, overrides=["recipe.stages.1.steps=3", "recipe.stages.0.name=first"]
    )
    assert [(s.name, s.steps) for s in cfg.recipe.stages] == [("first", 5), ("b", 3)]
    with pytest.raises(ConfigError, match=r"'recipe.stages.2' is past the end of a list of 2"):
        load_config(run, RunConfig, overrides=["recipe.stages.2.steps=1"])


def test_unknown_type_set_by_a_flag_names_the_flag(chain):
    with pytest.raises(ConfigError) as err:
        load_config(chain, RunConfig, overrides=["model.neck.type=fpm"])
    msg = str(err.value)
    assert "--set model.neck.type=fpm: key 'model.neck'" in msg
    assert "unknown neck 'fpm'; known: fpn" in msg
