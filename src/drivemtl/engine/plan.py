"""Turn a recipe into validated stage plans before anything trains.

Checks, per stage: tasks exist in the model, sets exist in the data and together provide every
task, the sampler is known, trainable / frozen patterns each select parameters (`@KIND` patterns
expand to the model's stages of that kind; parameters the model keeps frozen itself stay frozen),
pseudo-label sources are readable (a directory's card, or an earlier `pseudo_label` stage of the
recipe, whose labels need not exist yet), `init` points somewhere real. The stage's kind plug-in
(`drivemtl.engine.stages.STAGE_KINDS`) then expands it into the units the trainer runs, through a
`StageRequest`: a `supervised` stage is one unit, a `per_decoder` stage one sub-stage per task
(that task's decoder trained alone on the sets labelled for it) plus a merge, a `pseudo_label`
stage one labelling unit. The units themselves (`drivemtl.engine.units`) know how to run.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from drivemtl.config.loader import ConfigError
from drivemtl.data import SAMPLERS, DataConfig
from drivemtl.engine.config import PseudoLabelSourceConfig, StageConfig
from drivemtl.engine.run_config import RunConfig
from drivemtl.engine.stages import (
    STAGE_KINDS,
    FreezeError,
    FreezePlan,
    OptimizerGroup,
    OptimizerGroupOptions,
    matching,
    plan_freezing,
)
from drivemtl.engine.units import (
    PSEUDO_CARD,
    MergePlan,
    PseudoLabelPlan,
    StagePlan,
    Unit,
    pseudo_tasks,
    unit_path,
)

__all__ = [
    "PSEUDO_CARD",
    "EarlierStage",
    "MergePlan",
    "PseudoLabelPlan",
    "RecipeError",
    "StagePlan",
    "StageRequest",
    "Unit",
    "plan_for_model",
    "plan_recipe",
    "read_pseudo_card",
    "stage_data",
]


class RecipeError(ConfigError):
    """A recipe that cannot run as written (unknown task / set / sampler, bad pattern, ...)."""


@dataclass(frozen=True)
class EarlierStage:
    """What later stages may use of a planned stage: its kind and the pseudo labels it writes
    (set -> task -> path; under the run directory, or relative to it when planning without one)."""

    kind: str
    labels: Mapping[str, Mapping[str, str]] = field(default_factory=dict)


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


def _source_card(
    source: PseudoLabelSourceConfig, earlier: Mapping[str, EarlierStage], where: str
) -> Mapping[str, Mapping[str, str]]:
    """Set -> task -> label path of one source: a directory's card or an earlier stage's labels."""
    if source.path is not None:
        return read_pseudo_card(source.path)
    name = str(source.stage)
    producers = [n for n, e in earlier.items() if e.labels]
    known = (
        f"earlier stages that write pseudo labels: {', '.join(producers)}"
        if producers
        else "no earlier stage writes pseudo labels (add a stage of kind pseudo_label)"
    )
    if name not in earlier:
        raise RecipeError(
            f"{where}: pseudo-label source {source.describe()}: '{name}' is no earlier stage "
            f"of the recipe; {known}"
        )
    if not earlier[name].labels:
        raise RecipeError(
            f"{where}: pseudo-label source {source.describe()}: stage '{name}' (kind "
            f"{earlier[name].kind}) writes no pseudo labels; {known}"
        )
    return earlier[name].labels


def stage_data(
    data: DataConfig,
    sets: list[str],
    sources: list[PseudoLabelSourceConfig],
    where: str,
    earlier: Mapping[str, EarlierStage] | None = None,
) -> DataConfig:
    """The run's DataConfig restricted to `sets`, with pseudo-label sources added as labels.

    `earlier` are the stages planned before this one, which `{stage: NAME}` sources name.
    """
    set_cfgs = {name: data.sets[name].model_copy(deep=True) for name in sets}
    settings = {
        key: {s: sel.model_copy(deep=True) for s, sel in selection.items() if s in sets}
        for key, selection in data.label_settings.items()
    }
    for source in sources:
        card = _source_card(source, earlier or {}, where)
        label = source.describe()
        wanted_sets = source.sets if source.sets is not None else list(card)
        for set_name in wanted_sets:
            if set_name not in card:
                raise RecipeError(
                    f"{where}: pseudo-label source {label} has no set '{set_name}' "
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
                        f"{where}: pseudo-label source {label} has no '{task}' labels for "
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


def kind_aliases(
    patterns: Iterable[str], stage_prefixes: Mapping[str, Sequence[str]] | None, where: str
) -> dict[str, list[str]]:
    """The globs each `@KIND` pattern among `patterns` stands for (one `PREFIX*` per stage).

    An `@KIND` naming no stage of this model is an error that lists the kinds it has.
    """
    aliases: dict[str, list[str]] = {}
    known = dict(stage_prefixes or {})
    present = ", ".join(f"@{k}" for k, v in known.items() if v) or "none reported"
    for pattern in patterns:
        if not pattern.startswith("@") or pattern in aliases:
            continue
        kind = pattern[1:]
        prefixes = list(known.get(kind, ()))
        if not prefixes:
            if kind in known:
                problem = f"this model has no {kind} stage"
            else:
                kinds = ", ".join(known) or "none reported"
                problem = f"'{kind}' is no stage kind (kinds: {kinds})"
            raise RecipeError(
                f"{where}: pattern '{pattern}': {problem}; this model's stage kinds: {present}"
            )
        aliases[pattern] = [f"{prefix}*" for prefix in prefixes]
    return aliases


def _check_teacher(teacher: str, earlier: Sequence[str], where: str) -> str:
    """A teacher spec as a unit reference ("stage:<name>") or an absolute weights path."""
    if teacher == "previous":
        if not earlier:
            raise RecipeError(
                f"{where}: teacher 'previous': this is the first stage, so no stage trained a "
                "teacher; give `teacher:` a .safetensors file or put the teacher's stage first"
            )
        return f"stage:{earlier[-1]}"
    if teacher.startswith("stage:"):
        name = teacher[len("stage:") :]
        if name not in earlier:
            listed = ", ".join(earlier) if earlier else "none"
            raise RecipeError(
                f"{where}: teacher '{teacher}' names no earlier stage (earlier: {listed})"
            )
        return teacher
    path = Path(teacher)
    if path.suffix != ".safetensors" or not path.is_file():
        raise RecipeError(
            f"{where}: teacher '{teacher}' is not 'previous', 'stage:<name>' or an existing "
            ".safetensors file"
        )
    return str(path.resolve())


class StageRequest:
    """One validated recipe stage, as its kind plug-in sees it while expanding it into plans.

    `tasks`, `sets`, `init` are resolved (defaults filled in); `train(...)` makes a unit of
    training (the stage itself by default; pass a name and other tasks / sets / patterns for
    sub-stages), `merge(parts)` a merge of per-task decoders, `label(...)` a pseudo-labelling
    unit, `labelled_sets(task)` and `decoder_prefixes(task)` answer questions about data and
    model. `earlier` are the stages planned before this one (name -> `EarlierStage`, in order).
    A kind may also return units of its own `Unit` subclasses.
    """

    def __init__(
        self,
        stage: StageConfig,
        where: str,
        tasks: list[str],
        sets: list[str],
        init: str,
        data: DataConfig,
        parameter_names: list[str],
        decoder_prefixes: Mapping[str, list[str]],
        fixed: set[str],
        stage_prefixes: Mapping[str, Sequence[str]] | None,
        earlier: Mapping[str, EarlierStage] | None = None,
    ) -> None:
        self.stage = stage
        self.name = stage.name
        self.where = where
        self.tasks = list(tasks)
        self.sets = list(sets)
        self.init = init
        self.run_data = data
        self.parameter_names = parameter_names
        self._decoders = decoder_prefixes
        self._fixed = fixed
        self._stage_prefixes = stage_prefixes
        self.earlier: dict[str, EarlierStage] = dict(earlier or {})
        self._data: dict[tuple[str, ...], DataConfig] = {}

    def data(self, sets: Sequence[str] | None = None) -> DataConfig:
        """The run's data restricted to `sets` (default: the stage's) plus its pseudo labels."""
        key = tuple(self.sets if sets is None else sets)
        if key not in self._data:
            self._data[key] = stage_data(
                self.run_data, list(key), self.stage.pseudo_labels, self.where, self.earlier
            )
        return self._data[key]

    def labelled_sets(self, task: str) -> list[str]:
        """The stage's sets labelled for `task` (pseudo labels included)."""
        provided = _set_tasks(self.data())
        return [s for s in self.sets if task in provided.get(s, set())]

    def decoder_prefixes(self, task: str) -> list[str]:
        """Parameter-name prefixes of `task`'s decoder (its own head first); an error if none."""
        prefixes = list(self._decoders.get(task, ()))
        if not prefixes:
            raise RecipeError(f"{self.where}: the model reports no decoder for '{task}'")
        return prefixes

    def freeze(
        self, trainable: list[str], frozen: list[str], where: str | None = None
    ) -> FreezePlan:
        """The freezing plan of these patterns (`@KIND` expanded, model-fixed parameters kept)."""
        where = where or self.where
        aliases = kind_aliases([*trainable, *frozen], self._stage_prefixes, where)
        return plan_freezing(
            self.parameter_names, trainable, frozen, where, fixed=self._fixed, aliases=aliases
        )

    def train(
        self,
        name: str | None = None,
        tasks: list[str] | None = None,
        sets: list[str] | None = None,
        trainable: list[str] | None = None,
        frozen: list[str] | None = None,
        init: str | None = None,
        where: str | None = None,
        optimizers: Sequence[OptimizerGroupOptions] = (),
    ) -> StagePlan:
        """A unit of training; each argument defaults to the stage's own value.

        A unit named other than the stage is a sub-stage (its plan's `group` is the stage).
        `optimizers` splits its trained parameters among several optimisers (see
        `optimizer_groups`).
        """
        name = name or self.name
        tasks = list(self.tasks if tasks is None else tasks)
        sets = list(self.sets if sets is None else sets)
        here = where or self.where
        if not tasks or not sets:
            raise RecipeError(f"{here}: unit '{name}' has no tasks or no sets")
        outside = [t for t in tasks if t not in self.tasks] + [
            s for s in sets if s not in self.sets
        ]
        if outside:
            raise RecipeError(
                f"{here}: unit '{name}' trains {outside}, which are not among the stage's tasks "
                f"{self.tasks} / sets {self.sets}"
            )
        freeze = self.freeze(
            list(self.stage.trainable if trainable is None else trainable),
            list(self.stage.frozen if frozen is None else frozen),
            where,
        )
        return StagePlan(
            index=-1,
            name=name,
            config=self.stage,
            tasks=tasks,
            sets=sets,
            data=self.data(sets),
            freeze=freeze,
            init=init or self.init,
            group=None if name == self.name else self.name,
            optimizers=self.optimizer_groups(freeze, optimizers, here),
        )

    def optimizer_groups(
        self, freeze: FreezePlan, specs: Sequence[OptimizerGroupOptions], where: str | None = None
    ) -> list[OptimizerGroup]:
        """The parameters each optimiser of `specs` steps: the trained ones its patterns match
        that no earlier group took (a group left with none is an error)."""
        where = where or self.where
        taken: set[str] = set()
        groups = []
        for k, spec in enumerate(specs):
            aliases = kind_aliases(spec.params, self._stage_prefixes, where)
            free = [n for n in freeze.trainable if n not in taken]
            names = matching(free, spec.params, aliases)
            if not names:
                trained = matching(freeze.trainable, spec.params, aliases)
                reason = "earlier groups took all it matches" if trained else "none is trained here"
                raise RecipeError(
                    f"{where}: optimizers[{k}] (params {spec.params}) steps no parameter: {reason}"
                )
            taken.update(names)
            groups.append(OptimizerGroup(tuple(names), spec.optimizer))
        return groups

    def merge(self, parts: Mapping[str, str]) -> MergePlan:
        """Merge each task's decoder from the unit named `parts[task]` over the stage's start."""
        return MergePlan(name=self.name, init=self.init, parts=dict(parts))

    def label(
        self,
        teacher: str = "previous",
        rules: Mapping[str, float] | None = None,
        skip_labelled: bool = True,
        batch_size: int | None = None,
    ) -> PseudoLabelPlan:
        """A unit labelling the stage's sets for its tasks with `teacher` ('previous',
        'stage:<name>' or a weights file) under `rules` (`PseudoLabelRules` fields).

        With `skip_labelled`, a set is labelled only for the tasks it has no labels for; a set
        named in the stage's `sets` that would get none is an error, one the default (every
        set) brings in is left out.
        """
        if self.stage.tasks is None:
            raise RecipeError(
                f"{self.where}: name the tasks to pseudo-label (`tasks: [...]`; "
                f"supported: {', '.join(pseudo_tasks())})"
            )
        bad = [t for t in self.tasks if t not in pseudo_tasks()]
        if bad:
            raise RecipeError(
                f"{self.where}: tasks {bad} cannot be pseudo-labelled "
                f"(supported: {', '.join(pseudo_tasks())})"
            )
        provided = _set_tasks(self.run_data)
        labels: dict[str, list[str]] = {}
        for set_name in self.sets:
            own = provided.get(set_name, set()) if skip_labelled else set()
            missing = [t for t in self.tasks if t not in own]
            if missing:
                labels[set_name] = missing
            elif self.stage.sets is not None:
                raise RecipeError(
                    f"{self.where}: set '{set_name}' has labels of its own for every task of "
                    f"{self.tasks}: nothing to pseudo-label (drop it from `sets`, or set "
                    "skip_labelled: false to label it anyway)"
                )
        if not labels:
            raise RecipeError(
                f"{self.where}: every set has labels of its own for {self.tasks}: nothing to "
                "pseudo-label"
            )
        return PseudoLabelPlan(
            name=self.name,
            init=self.init,
            teacher=_check_teacher(teacher, list(self.earlier), self.where),
            labels=labels,
            rules=dict(rules or {}),
            batch_size=batch_size or self.stage.batch_size,
        )


def plan_recipe(
    config: RunConfig,
    parameter_names: list[str],
    decoder_prefixes: dict[str, list[str]],
    *,
    fixed: Iterable[str] = (),
    stage_prefixes: Mapping[str, Sequence[str]] | None = None,
    run_dir: str | Path | None = None,
) -> list[Unit]:
    """Validate `config.recipe` against the model and the data; expand stages into plans.

    `fixed` are the parameters the model keeps frozen itself (`fixed_parameter_names()`): no
    stage trains them. `stage_prefixes` (`MultiTaskNet.stage_prefixes()`) resolves `@KIND`
    patterns. Every plan name is unique; a plan reads (`init`, ...) only earlier plans.
    `run_dir` is where the pseudo labels of `pseudo_label` stages will lie (without it, their
    paths in the plans are relative to the run directory).
    """
    recipe = config.recipe
    if recipe is None:
        raise RecipeError("the config has no `recipe` section: nothing to train")
    data: DataConfig | None = getattr(config, "data", None)
    if data is None:
        raise RecipeError("the config has no `data` section: nothing to train on")
    model_tasks = list(config.model.tasks)
    provided = _set_tasks(data)
    fixed_names = set(fixed)
    plans: list[Unit] = []
    done: list[str] = []
    earlier: dict[str, EarlierStage] = {}
    for stage in recipe.stages:
        where = f"recipe stage '{stage.name}'"
        tasks, sets = _stage_tasks_and_sets(stage, model_tasks, data, provided, where)
        request = StageRequest(
            stage,
            where,
            tasks,
            sets,
            _check_init(stage, done),
            data,
            parameter_names,
            decoder_prefixes,
            fixed_names,
            stage_prefixes,
            earlier,
        )
        if getattr(stage.kind, "trains", True):
            _check_trained_stage(stage, request, where)
        try:
            units = STAGE_KINDS.get(stage.kind.type)(stage.kind, request)
        except FreezeError as exc:
            raise RecipeError(str(exc)) from None
        _check_units(units, plans, stage.kind.type, stage.name, where)
        labels = _append_units(units, plans, run_dir)
        earlier[stage.name] = EarlierStage(stage.kind.type, labels)
        done.append(stage.name)
    return plans


def _stage_tasks_and_sets(
    stage: StageConfig,
    model_tasks: list[str],
    data: DataConfig,
    provided: Mapping[str, set[str]],
    where: str,
) -> tuple[list[str], list[str]]:
    """The stage's tasks and image sets (defaults filled in), each checked to exist."""
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
    accepted = SAMPLERS.get(stage.sampler).OPTIONS
    unknown_options = sorted(set(stage.sampler_options) - set(accepted))
    if unknown_options:
        raise RecipeError(
            f"{where}: sampler '{stage.sampler}' has no options {unknown_options} "
            f"(it accepts {list(accepted) or 'none'})"
        )
    return list(tasks), list(sets)


def _append_units(
    units: list[Unit], plans: list[Unit], run_dir: str | Path | None
) -> dict[str, dict[str, str]]:
    """Number `units` after `plans` and append them; set -> task -> path of their pseudo labels."""
    labels: dict[str, dict[str, str]] = {}
    for unit in units:
        unit.index = len(plans)
        plans.append(unit)
        folder = unit_path(unit.index, unit.name)
        folder = Path(run_dir) / folder if run_dir is not None else folder
        for set_name, paths in unit.pseudo_labels().items():
            labels.setdefault(set_name, {}).update(
                {task: str(folder / rel) for task, rel in paths.items()}
            )
    return labels


def _check_trained_stage(stage: StageConfig, request: StageRequest, where: str) -> None:
    """A stage that trains has labels for each of its tasks and weights only for those."""
    for task in request.tasks:
        if not request.labelled_sets(task):
            raise RecipeError(
                f"{where}: no set among {request.sets} is labelled for task '{task}' "
                "(add a set or a pseudo-label source that provides it)"
            )
    unknown_weights = sorted(set(stage.loss_weighting.weights) - set(request.tasks))
    if unknown_weights:
        raise RecipeError(
            f"{where}: loss_weighting.weights names {unknown_weights}, not trained here "
            f"({request.tasks})"
        )


def plan_for_model(config: RunConfig, model: Any, run_dir: str | Path | None = None) -> list[Unit]:
    """`plan_recipe` with everything it needs read from `model` (a MultiTaskNet): parameter
    names, decoder prefixes, the parameters it keeps frozen and its stage prefixes."""
    return plan_recipe(
        config,
        [n for n, _ in model.named_parameters()],
        model.decoder_prefixes(),
        fixed=model.fixed_parameter_names(),
        stage_prefixes=model.stage_prefixes(),
        run_dir=run_dir,
    )


def _check_units(
    units: Sequence[Unit], earlier: Sequence[Unit], kind: str, stage: str, where: str
) -> None:
    """A kind's expansion: units only, unique names, each reading only earlier units, and a last
    unit named after the stage (its result, which `init: previous` / `stage:NAME` of later stages
    and the run's final weights refer to)."""
    if not units:
        raise RecipeError(f"{where}: stage kind '{kind}' expanded the stage into no plan")
    seen = {p.name for p in earlier}
    for unit in units:
        if not isinstance(unit, Unit):
            raise RecipeError(
                f"{where}: stage kind '{kind}' returned a {type(unit).__name__}, not a plan "
                "(a drivemtl.engine.units.Unit)"
            )
        if unit.name in seen:
            raise RecipeError(f"{where}: stage kind '{kind}' made a second plan '{unit.name}'")
        if unit.init.startswith("stage:") and unit.init[len("stage:") :] not in seen:
            raise RecipeError(
                f"{where}: stage kind '{kind}': plan '{unit.name}' starts from '{unit.init}', "
                "which is no earlier plan"
            )
        missing = sorted(set(unit.reads()) - seen)
        if missing:
            what = (
                f"merge '{unit.name}' takes decoders from"
                if isinstance(unit, MergePlan)
                else f"{type(unit).__name__} '{unit.name}' reads"
            )
            raise RecipeError(
                f"{where}: stage kind '{kind}': {what} {missing}, which are no earlier plans"
            )
        seen.add(unit.name)
    if units[-1].name != stage:
        raise RecipeError(
            f"{where}: stage kind '{kind}': the last plan is '{units[-1].name}'; the stage's "
            f"result must be its last plan, named '{stage}'"
        )
