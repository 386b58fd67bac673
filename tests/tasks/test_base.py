"""The task registry and the plug-in contract every task follows."""

from __future__ import annotations

import pytest

from drivemtl.config.loader import ConfigError
from drivemtl.models.config import TaskConfig
from drivemtl.structures.fields import task_fields
from drivemtl.structures.sample import Sample
from drivemtl.tasks import TASKS

IMAGE_TASKS = {
    "tagging": "classification", "semantic": "segmentation", "drivable": "segmentation",
    "lanes": "segmentation", "detection": "localization", "instance": "localization",
    "pose": "localization", "depth": "geometry", "normals": "geometry", "edges": "geometry",
}  # fmt: skip


def test_every_image_task_is_registered_with_its_group_and_fields() -> None:
    assert set(TASKS.names()) >= set(IMAGE_TASKS)
    sample_fields = set(Sample.__dataclass_fields__) | {"tags"}
    for name, group in IMAGE_TASKS.items():
        task = TASKS.get(name)
        assert task.name == name and task.group == group
        declared = {f.name for f in task_fields(name)}
        assert declared and declared <= sample_fields
        assert isinstance(task.metric, str) and task.metric


def test_unknown_head_option_names_the_config_key() -> None:
    with pytest.raises(ConfigError, match=r"model\.tasks\.semantic\.head\.chanels"):
        TASKS.get("semantic")(TaskConfig(head={"chanels": 3}))
    with pytest.raises(KeyError, match="known:"):
        TASKS.get("segmentation")


def test_loss_weight_comes_from_the_config() -> None:
    assert TASKS.get("depth")(TaskConfig(loss_weight=0.7)).loss_weight == 0.7


def test_task_options_with_extras_unpickle_in_a_fresh_process(tmp_path) -> None:
    """A spawned DDP rank unpickles the model, options models built from extras included."""
    import pickle
    import subprocess
    import sys

    from drivemtl.tasks.depth import DepthTask
    from drivemtl.tasks.semantic import SemanticTask

    path = tmp_path / "options.pkl"
    path.write_bytes(pickle.dumps([SemanticTask().options, DepthTask().options]))
    code = (
        f"import pickle; print([type(o).__name__ for o in pickle.load(open({str(path)!r}, 'rb'))])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert (
        out.stdout.strip()
        == "['ClassListOptionsSemanticFPNFamily', 'DepthOptionsSemanticFPNFamily']"
    )
