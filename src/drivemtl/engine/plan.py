"""Turn a recipe into validated stage plans before anything trains.

Checks, per stage: tasks exist in the model, sets exist in the data and together provide every
task, the sampler is known, trainable / frozen patterns each select parameters, pseudo-label
sources are readable, `init` points somewhere real. A `per_decoder` stage expands into one
sub-stage per task (that task's decoder trained alone on the sets labelled for it) plus a merge.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml

from drivemtl.config.loader import ConfigError
from drivemtl.data import SAMPLERS, DataConfig
from drivemtl.engine.config import PseudoLabelSourceConfig, StageConfig
from drivemtl.engine.run_config import RunConfig
from drivemtl.engine.stages import FreezeError, FreezePlan, plan_freezing

PSEUDO_CARD = "pseudo_labels.yaml"


class RecipeError(ConfigError):
    """A recipe that cannot run as written (unknown task / set / sampler, bad pattern, ...)."""


@dataclass
class StagePlan:
    """One unit of training: a stage, or one decoder of a per-decoder stage."""

    index: int
    name: str
    config: StageConfig
    tasks: list[str]
    sets: list[str]
    data: DataConfig
    freeze: FreezePlan
    init: str
    group: str | None = None


@dataclass
class MergePlan:
    """Merge the decoders fine-tuned by the sub-stages of a per-decoder stage into one model."""

    name: str
    init: str
    parts: dict[str, str] = field(default_factory=dict)  # task -> sub-stage name


def _set_tasks(data: DataConfig) -> dict[str, set[str]]:
    """Tasks each set provides under the active label setting."""
    selections = data.label_settings.get(data.label_setting) if data.label_setting else None
    out = {}
    for name, set_cfg in data.sets.items():
        if selections is not None:
            if name not in selections:
                continue
            chosen = selections[name].tasks
            out[name] = set(chosen if chosen is not None else set_cfg.tasks)
        else:
            out[name] = set(set_cfg.tasks)
    return out


def read_pseudo_card(path: Path) -> dict[str, dict[str, str]]:
    """Set -> task -> label path (absolute) from a directory written by `drivemtl pseudo-label`."""
    card_path = Path(path) / PSEUDO_CARD
    if not card_path.is_file():
        raise RecipeError(
            f"pseudo-label source {path}: {PSEUDO_CARD} not found (write it with "
            "`drivemtl pseudo-label`)"
        )
    card = yaml.safe_load(card_path.read_text(encoding="utf-8")) or {}
    sets = card.get("sets")
    if not isinstance(sets, dict):
        raise RecipeError(f"{card_path}: expected a `sets` mapping")
    return {
        s: {t: str(Path(path) / rel) for t, rel in (tasks or {}).items()}
        for s, tasks in sets.items()
    }


def stage_data(
    data: DataConfig, sets: list[str], sources: list[PseudoLabelSourceConfig], where: str
) -> DataConfig:
    """The run's DataConfig restricted to `sets`, with pseudo-label sources added as labels."""
    set_cfgs = {name: data.sets[name].model_copy(deep=True) for name in sets}
    settings = {
        key: {s: sel.model_copy(deep=True) for s, sel in selection.items() if s in sets}
        for key, selection in data.label_settings.items()
    }
    for source in sources:
        card = read_pseudo_card(source.path)
        wanted_sets = source.sets if source.sets is not None else list(card)
        for set_name in wanted_sets:
            if set_name not in card:
                raise RecipeError(
                    f"{where}: pseudo-label source {source.path} has no set '{set_name}' "
                    f"(it has {sorted(card)})"
                )
            if set_name not in set_cfgs:
                continue
            available = card[set_name]
            tasks = source.tasks if source.tasks is not None else list(available)
            for task in tasks:
                if task not in available:
                    if source.tasks is None:
                        continue
                    raise RecipeError(
                        f"{where}: pseudo-label source {source.path} has no '{task}' labels for "
                        f"set '{set_name}' (it has {sorted(available)})"
                    )
                cfg = set_cfgs[set_name]
                cfg.pseudo_labels = {**cfg.pseudo_labels, task: Path(available[task])}
                if task not in cfg.tasks:
                    cfg.tasks = [*cfg.tasks, task]
                for selection in settings.values():
                    sel = selection.get(set_name)
                    if sel is not None and sel.tasks is not None and task not in sel.tasks:
                        sel.tasks = [*sel.tasks, task]
    return data.model_copy(update={"sets": set_cfgs, "label_settings": settings})


def _check_init(stage: StageConfig, done: list[str]) -> str:
    if stage.init == "previous":
        return f"stage:{done[-1]}" if done else "scratch"
    if stage.init == "scratch" or stage.init.startswith("stage:"):
        return stage.init
    path = Path(stage.init)
    if path.suffix != ".safetensors" or not path.is_file():
        raise RecipeError(
            f"stage '{stage.name}': init '{stage.init}' is not 'previous', 'scratch', "
            "'stage:<name>' or an existing .safetensors file"
        )
    return str(path.resolve())


def plan_recipe(
    config: RunConfig,
    parameter_names: list[str],
    decoder_prefixes: dict[str, list[str]],
) -> list[StagePlan | MergePlan]:
    """Validate `config.recipe` against the model's parameters and the data; expand stages."""
    recipe = config.recipe
    if recipe is None:
        raise RecipeError("the config has no `recipe` section: nothing to train")
    data: DataConfig | None = getattr(config, "data", None)
    if data is None:
        raise RecipeError("the config has no `data` section: nothing to train on")
    model_tasks = list(config.model.tasks)
    provided = _set_tasks(data)
    plans: list[StagePlan | MergePlan] = []
    done: list[str] = []
    for stage in recipe.stages:
        where = f"recipe stage '{stage.name}'"
        tasks = stage.tasks if stage.tasks is not None else model_tasks
        unknown = [t for t in tasks if t not in model_tasks]
        if unknown:
            raise RecipeError(
                f"{where}: tasks {unknown} are not tasks of the model; model.tasks: {model_tasks}"
            )
        sets = stage.sets if stage.sets is not None else list(provided)
        unknown = [s for s in sets if s not in data.sets]
        if unknown:
            raise RecipeError(
                f"{where}: image sets {unknown} are not in data.sets ({sorted(data.sets)})"
            )
        inactive = [s for s in sets if s not in provided]
        if inactive:
            raise RecipeError(
                f"{where}: sets {inactive} are not part of label setting '{data.label_setting}'"
            )
        if stage.sampler not in SAMPLERS:
            raise RecipeError(
                f"{where}: unknown sampler '{stage.sampler}'; known: {', '.join(SAMPLERS.names())}"
            )
        sdata = stage_data(data, sets, stage.pseudo_labels, where)
        stage_provides = _set_tasks(sdata)
        for task in tasks:
            if not any(task in stage_provides[s] for s in sets):
                raise RecipeError(
                    f"{where}: no set among {sets} is labelled for task '{task}' "
                    "(add a set or a pseudo-label source that provides it)"
                )
        unknown_weights = sorted(set(stage.loss_weighting.weights) - set(tasks))
        if unknown_weights:
            raise RecipeError(
                f"{where}: loss_weighting.weights names {unknown_weights}, not trained here ({tasks})"
            )
        init = _check_init(stage, done)
        try:
            if not stage.per_decoder:
                freeze = plan_freezing(parameter_names, stage.trainable, stage.frozen, where)
                plans.append(
                    StagePlan(len(plans), stage.name, stage, tasks, sets, sdata, freeze, init)
                )
            else:
                merge = MergePlan(name=stage.name, init=init)
                for task in tasks:
                    prefixes = decoder_prefixes.get(task)
                    if not prefixes:
                        raise RecipeError(f"{where}: the model reports no decoder for '{task}'")
                    patterns = [f"{p}*" for p in prefixes]
                    freeze = plan_freezing(parameter_names, patterns, [], f"{where} ({task})")
                    task_sets = [s for s in sets if task in stage_provides[s]]
                    sub = f"{stage.name}.{task}"
                    plans.append(
                        StagePlan(
                            len(plans),
                            sub,
                            stage,
                            [task],
                            task_sets,
                            stage_data(data, task_sets, stage.pseudo_labels, where),
                            freeze,
                            init,
                            group=stage.name,
                        )
                    )
                    merge.parts[task] = sub
                plans.append(merge)
        except FreezeError as exc:
            raise RecipeError(str(exc)) from None
        done.append(stage.name)
    return plans
