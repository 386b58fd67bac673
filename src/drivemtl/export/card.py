"""The model card written next to exported graphs, and the check of a config against it.

`model_card.json` records the graphs (files, inputs and outputs with shapes and meaning), the
input convention (layout, colour order, normalisation mean / std, size divisor), the classes of
every task, the whole run config, the DriveMTL version and the SHA-256 of the weights.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from drivemtl.engine.run_config import RunConfig
from drivemtl.export.errors import ExportError

CARD_NAME = "model_card.json"
CARD_FORMAT = "drivemtl-onnx/1"
# Keys of the model config that do not change the exported network (initialisation only).
IGNORED_KEYS = ("model.backbone.weights",)


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def task_classes(task: Any) -> dict[str, Any]:
    """What a task predicts: its class names, tag attributes or dense branches."""
    if callable(getattr(task, "attributes", None)):
        from drivemtl.structures.bdd import TAG_ATTRIBUTES

        return {"attributes": {k: list(v) for k, v in TAG_ATTRIBUTES.items()}}
    info: dict[str, Any] = {}
    classes = getattr(task, "classes", None)
    if classes is not None:
        info["classes"] = list(classes)
    if callable(getattr(task, "branches", None)):
        info["branches"] = dict(task.branches())
    if getattr(task, "num_keypoints", None):
        from drivemtl.structures.bdd import POSE_JOINTS

        info["joints"] = list(POSE_JOINTS)
        info["person_classes"] = list(task.options.person_classes)
    return info


def write_card(folder: Path, card: dict[str, Any]) -> Path:
    """Write `card` as `folder/model_card.json` (atomically)."""
    path = Path(folder) / CARD_NAME
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path


def read_card(folder: Path) -> dict[str, Any]:
    """The model card of an export folder, or an ExportError naming what is missing."""
    path = Path(folder) / CARD_NAME
    if not Path(folder).is_dir():
        raise ExportError(f"{folder}: no such ONNX export folder")
    if not path.is_file():
        raise ExportError(f"{path}: missing (is {folder} a `drivemtl export` folder?)")
    try:
        card = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ExportError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(card, dict) or card.get("format") != CARD_FORMAT:
        found = card.get("format") if isinstance(card, dict) else type(card).__name__
        raise ExportError(f"{path}: format {found!r}, expected {CARD_FORMAT!r}")
    for key in ("graphs", "config", "tasks"):
        if key not in card:
            raise ExportError(f"{path}: has no {key!r} entry")
    return card


def card_config(card: dict[str, Any], folder: Path) -> RunConfig:
    """The run config recorded in a model card."""
    try:
        return RunConfig.model_validate(card["config"])
    except ValueError as exc:
        raise ExportError(f"{Path(folder) / CARD_NAME}: its config is not valid: {exc}") from None


def _leaves(value: Any, prefix: str) -> Iterator[tuple[str, Any]]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _leaves(item, f"{prefix}.{key}" if prefix else str(key))
    else:
        yield prefix, value


def config_differences(card: dict[str, Any], config: RunConfig) -> list[str]:
    """Where `config`'s model (and normalisation) differs from the exported one, as
    'key: export value vs config value' lines (empty when they agree)."""
    exported = dict(_leaves({"model": card["config"].get("model", {})}, ""))
    given = dict(_leaves({"model": config.model.model_dump(mode="json")}, ""))
    lines = []
    for key in sorted(set(exported) | set(given)):
        if key.startswith(IGNORED_KEYS):
            continue
        a, b = exported.get(key, "(default)"), given.get(key, "(default)")
        if a != b:
            lines.append(f"{key}: {a!r} in the export, {b!r} in the config")
    exported_input = card.get("input", {})
    if config.data is not None and exported_input:
        for key in ("mean", "std"):
            a = list(exported_input.get(key, []))
            b = list(getattr(config.data.transforms, key))
            if a != b:
                lines.append(f"data.transforms.{key}: {a} in the export, {b} in the config")
    return lines


def _class_differences(card: dict[str, Any], config: RunConfig) -> list[str]:
    """Tasks whose classes (or attributes / branches) differ from the exported ones."""
    from drivemtl.tasks import TASKS

    lines = []
    for name, task_config in config.model.tasks.items():
        if name not in card["tasks"] or name not in TASKS:
            continue
        given = task_classes(TASKS.get(name)(task_config))
        exported = card["tasks"][name]
        for key in sorted(set(given) | set(exported)):
            a, b = exported.get(key), given.get(key)
            if a != b:
                count = len(a) if isinstance(a, list | dict) else a
                other = len(b) if isinstance(b, list | dict) else b
                lines.append(f"{key} of {name}: {count} in the export, {other} in the config")
    return lines


def check_config(card: dict[str, Any], config: RunConfig, folder: Path) -> None:
    """Refuse a config that is not the one the folder's graphs were exported from."""
    tasks_exported = list(card["tasks"])
    tasks_given = list(config.model.tasks)
    problems = []
    if tasks_exported != tasks_given:
        problems.append(f"tasks {tasks_exported} in the export, {tasks_given} in the config")
    problems += _class_differences(card, config)
    problems += config_differences(card, config)
    if problems:
        shown = "; ".join(problems[:6]) + (
            f"; ... ({len(problems)} in all)" if len(problems) > 6 else ""
        )
        raise ExportError(
            f"{Path(folder) / CARD_NAME}: the ONNX model was exported from another model than "
            f"the given config: {shown}"
        )
