"""Pseudo labels: run a trained teacher over image sets and write its confident predictions in the
canonical format, so a later stage can add them as a label source (`StageConfig.pseudo_labels`).

Rules (configurable): boxes kept at score >= 0.5; semantic / drivable pixels with confidence below
0.3 (`semantic_confidence` / `drivable_confidence`, each task its own) set to ignore (255); pose
joints scoring below 0.2 dropped. Output layout::

    OUT/pseudo_labels.yaml                 card: teacher, rules, sets -> task -> label path
    OUT/<SET>/labels.json                  Scalabel frames (tagging, detection, pose labels)
    OUT/<SET>/masks/<task>/<frame>.png     semantic / drivable bitmasks

They live outside the ground-truth folders and are only read through a stage's `pseudo_labels`, so
evaluation (which reads the data config) never sees them. `drivemtl pseudo-label` writes them with
`write_pseudo_labels`; a recipe's `pseudo_label` stage with `label_sets`, into its folder of the
run directory (same layout and card).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import yaml
from torch import nn

from drivemtl.data import build_dataset, build_transforms
from drivemtl.data.field_codecs import codec_of
from drivemtl.data.png_codecs import write_png
from drivemtl.data.writers import prediction_to_frame
from drivemtl.engine.checkpoint import load_into, load_weights
from drivemtl.engine.plan import RecipeError
from drivemtl.engine.run_config import RunConfig
from drivemtl.engine.units import (
    PSEUDO_CARD,
    PSEUDO_JSON_TASKS,
    pseudo_label_paths,
    pseudo_mask_tasks,
    pseudo_tasks,
)
from drivemtl.structures.batch import collate
from drivemtl.structures.bdd import IGNORE_INDEX, THING_CLASSES
from drivemtl.structures.fields import pseudo_mask_field
from drivemtl.structures.predictions import FramePrediction
from drivemtl.structures.scalabel import Frame, save_frames

JSON_TASKS = PSEUDO_JSON_TASKS


@dataclass(frozen=True)
class PseudoLabelRules:
    """Confidence thresholds of the teacher's predictions that become labels.

    Class-map tasks: pixels whose class probability is below the task's threshold become ignore
    (255): `semantic_confidence`, `drivable_confidence`, and `confidence[task]` for the other
    (plug-in) mask tasks, whose default 0 writes the map unfiltered.
    """

    box_score: float = 0.5
    semantic_confidence: float = 0.3
    joint_score: float = 0.2
    drivable_confidence: float = 0.3
    confidence: dict[str, float] = field(default_factory=dict)

    def mask_confidence(self, task: str) -> float:
        """The pixel-confidence threshold of mask task `task` (one of `pseudo_mask_tasks()`)."""
        masks = pseudo_mask_tasks()
        if task not in masks:
            raise ValueError(f"no pixel-confidence rule for task '{task}' (mask tasks: {masks})")
        if task in ("semantic", "drivable"):
            return float(getattr(self, f"{task}_confidence"))
        return float(self.confidence.get(task, 0.0))


def confident_mask(
    classes: torch.Tensor, confidence: torch.Tensor | None, threshold: float
) -> np.ndarray:
    """uint8 class map with pixels below `threshold` confidence set to ignore (255)."""
    out = classes.to(torch.int64).clone()
    if confidence is not None:
        out[confidence < threshold] = IGNORE_INDEX
    return out.clamp(0, 255).to(torch.uint8).cpu().numpy()


def mask_label(pred: FramePrediction, task: str, rules: PseudoLabelRules) -> np.ndarray:
    """The pseudo-label PNG array of mask task `task` for one prediction.

    A class map's pixels below the task's confidence threshold become ignore (255). A class-map
    prediction without its confidence (`<field>_confidence`) is an error unless the threshold is
    0: writing the map unfiltered would silently break the rules recorded in the card. Other
    maps (regression fields) are encoded as predicted.
    """
    spec = pseudo_mask_field(task)
    assert spec is not None
    value = pred.get(spec.name)
    if value is None:
        raise RecipeError(f"pseudo-label: frame {pred.meta.name}: the model predicted no {task}")
    if spec.codec != "class_map":
        return codec_of(spec).encode(value.detach().cpu().numpy(), spec)
    threshold = rules.mask_confidence(task)
    name = f"{spec.name}_confidence"
    confidence = pred.get(name)
    if confidence is None and threshold > 0:
        raise RecipeError(
            f"pseudo-label: frame {pred.meta.name}: the {task} prediction carries no confidence "
            f"({name}), so the {task} confidence rule ({threshold}) cannot be applied "
            f"(set it to 0 to write the class map unfiltered)"
        )
    return confident_mask(value, confidence, threshold)


def write_mask_labels(
    pred: FramePrediction, tasks: list[str], rules: PseudoLabelRules, set_dir: Path
) -> None:
    """Write the prediction's confident mask-task maps as `set_dir/masks/<task>/<frame>.png`."""
    for task in tasks:
        if pseudo_mask_field(task) is None:
            continue
        path = set_dir / "masks" / task / Path(pred.meta.name).with_suffix(".png")
        write_png(path, mask_label(pred, task, rules))


def write_pseudo_labels(
    config: RunConfig,
    checkpoint: str | Path | nn.Module,
    sets: list[str],
    tasks: list[str],
    out_dir: str | Path,
    rules: PseudoLabelRules | None = None,
    batch_size: int = 4,
    device: str = "cpu",
) -> Path:
    """Label `sets` for `tasks` with the teacher in `checkpoint`; returns the card's path.

    `checkpoint` is a weights file of the config's model, or the model itself (in memory).
    """
    return label_sets(
        config, checkpoint, {s: list(tasks) for s in sets}, out_dir, rules, batch_size, device
    )


@torch.no_grad()
def label_sets(
    config: RunConfig,
    teacher: str | Path | nn.Module,
    labels: Mapping[str, Sequence[str]],
    out_dir: str | Path,
    rules: PseudoLabelRules | None = None,
    batch_size: int = 4,
    device: str = "cpu",
) -> Path:
    """Label each set of `labels` for its tasks (set -> tasks) with `teacher` (a weights file of
    the config's model, or the model itself); writes the layout of the module doc and returns
    the card's path."""
    rules = rules or PseudoLabelRules()
    data = config.data  # type: ignore[attr-defined]
    if data is None:
        raise RecipeError("pseudo-label: the config has no `data` section")
    unknown = [s for s in labels if s not in data.sets]
    if unknown:
        raise RecipeError(
            f"pseudo-label: sets {unknown} are not in data.sets ({sorted(data.sets)})"
        )
    wanted = list(dict.fromkeys(t for tasks in labels.values() for t in tasks))
    supported = pseudo_tasks()
    bad = [t for t in wanted if t not in supported or t not in config.model.tasks]
    if bad:
        raise RecipeError(
            f"pseudo-label: tasks {bad} cannot be pseudo-labelled by this model "
            f"(supported: {list(supported)}; model tasks: {list(config.model.tasks)})"
        )
    model, teacher_name = _teacher_model(config, teacher)
    model.eval().to(device)
    detector = {**model.support, **model.tasks}.get("detection")
    class_names = getattr(detector, "classes", THING_CLASSES)
    out = Path(out_dir)
    card_sets: dict[str, dict[str, str]] = {}
    transform = build_transforms(data.transforms, train=False)
    for set_name, set_tasks in labels.items():
        tasks = list(set_tasks)
        subset = data.model_copy(
            update={"sets": {set_name: data.sets[set_name]}, "label_setting": None}
        )
        dataset = build_dataset(subset, "train", transform=transform, drop_skipped=True)
        frames: list[Frame] = []
        json_tasks = [t for t in tasks if t in JSON_TASKS]
        for start in range(0, len(dataset), batch_size):
            read = [dataset[i] for i in range(start, min(start + batch_size, len(dataset)))]
            samples = [s for s in read if s is not None]  # a skipped frame gets no label
            if not samples:
                continue
            batch = collate(samples, data.size_divisor).to(device)
            for pred in model.predict(batch, tasks):
                frame = prediction_to_frame(
                    pred, class_names, json_tasks, rules.box_score, rules.joint_score
                )
                frames.append(frame)
                write_mask_labels(pred, tasks, rules, out / set_name)
        if json_tasks:
            save_frames(frames, out / set_name / "labels.json")
        card_sets[set_name] = pseudo_label_paths(set_name, tasks)
    card = {
        "pseudo_labels": True,
        "teacher": teacher_name,
        "rules": asdict(rules),
        "sets": card_sets,
    }
    path = out / PSEUDO_CARD
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(card, sort_keys=False), encoding="utf-8")
    return path


def _teacher_model(config: RunConfig, teacher: str | Path | nn.Module) -> tuple[nn.Module, str]:
    """The teacher as a model and how the card names it (its weights file, resolved)."""
    if isinstance(teacher, nn.Module):
        return teacher, f"<in-memory {type(teacher).__name__}>"
    from drivemtl.models import build_model

    model = build_model(config.model)
    load_into(model, load_weights(teacher), source=str(teacher))
    return model, str(Path(teacher).resolve())
