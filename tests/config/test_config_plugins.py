"""`plugins:` imports a config's plug-in modules before the rest is validated.

A plug-in file written here declares a task (`glare`: a one-channel float map) with its data
field and registers the task; a config naming it validates only with the plug-in listed, in this
process and in a fresh `drivemtl config show` process. Bad entries are one-line config errors.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from drivemtl.config import ConfigError
from drivemtl.config.plugins import PluginError, import_plugin
from drivemtl.engine.run_config import load_run_config

PLUGIN = """
import torch
from drivemtl.structures.fields import DataField, declare_task
from drivemtl.tasks.base import TASKS
from drivemtl.tasks.dense import DenseTask

declare_task("glare", DataField("glare", dtype=torch.float32, ignore=0.0, resize="bilinear"))


@TASKS.register("glare")
class GlareTask(DenseTask):
    name = "glare"
    group = "geometry"
    metric = "L1"

    def branches(self):
        return {"glare": 1}
"""


def write_config(tmp_path: Path, plugins: list[str]) -> Path:
    tree = {
        "plugins": plugins,
        "model": {
            "backbone": {"type": "resnet18", "width": 8},
            "tasks": {"glare": {"head": {"channels": 8}}},
        },
        "data": {"sets": {"sun": {"root": str(tmp_path), "tasks": ["glare"]}}},
    }
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(tree))
    return path


def test_a_config_names_a_plugin_task_once_its_module_is_listed(tmp_path: Path) -> None:
    (tmp_path / "glare_plugin.py").write_text(PLUGIN)
    fresh = [str(Path(sys.executable).parent / "drivemtl"), "config", "show"]
    without = subprocess.run(
        [*fresh, str(write_config(tmp_path, []))], capture_output=True, text=True, check=False
    )
    assert without.returncode == 2
    assert "unknown task(s) ['glare']" in without.stderr + without.stdout

    config_path = write_config(tmp_path, [str(tmp_path / "glare_plugin.py")])
    shown = subprocess.run([*fresh, str(config_path)], capture_output=True, text=True, check=False)
    assert shown.returncode == 0, shown.stderr
    assert "glare" in shown.stdout

    config = load_run_config(config_path)
    assert config.data.sets["sun"].tasks == ["glare"]
    assert import_plugin(str(tmp_path / "glare_plugin.py")) is import_plugin(
        str(tmp_path / "glare_plugin.py")
    )  # imported once


def test_bad_plugin_entries_are_config_errors_naming_the_entry(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"plugins: .*missing\.py: file not found"):
        load_run_config(write_config(tmp_path, [str(tmp_path / "missing.py")]))
    with pytest.raises(ConfigError, match=r"plugins: no_such_module_x: ModuleNotFoundError"):
        load_run_config(write_config(tmp_path, ["no_such_module_x"]))
    (tmp_path / "broken.py").write_text("raise RuntimeError('half-written plug-in')\n")
    with pytest.raises(PluginError, match=r"broken\.py: RuntimeError: half-written plug-in"):
        import_plugin(str(tmp_path / "broken.py"))
