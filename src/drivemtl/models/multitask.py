"""MultiTaskNet: the network as named stages over one typed feature container.

Stages, each built by `type` from its registry: backbone -> neck -> adapters (on pixel levels) ->
group encoders (a shared feature per task group) -> interaction blocks (over group features and
the object stream) -> one decoder per task (task features) -> exchange modules (between task
features) -> one predictor per task (raw outputs). Every stage declares the streams it needs,
provides and modifies (`drivemtl.models.stage`); the forward pass runs, in dependency order, only
the stages the requested tasks depend on.

The network knows tasks only through a small protocol (`TaskPlugin`), so the task plug-ins
(`drivemtl.tasks`) stay one layer above; `build_model` looks them up by name. A task whose head
needs a stream that no enabled task provides (instance masks need the object stream) gets a
*support* head for it (the detection head), whose loss joins that task's loss. Parameter names
are `backbone.*`, `neck.*`, `adapters.<i>.*`, `groups.<group>.*`, `interactions.<i>.*`,
`heads.<task>.*` (decoder and predictor) and `exchanges.<i>.*`.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from drivemtl.config.loader import ConfigError
from drivemtl.models.config import ModelConfig, TaskConfig
from drivemtl.models.features import (
    BACKBONE,
    IMAGE,
    OBJECTS,
    PIXEL,
    REFERENCE,
    Features,
    FeatureSpec,
    group_stream,
    task_stream,
)
from drivemtl.models.stage import KINDS, Stage, StageContext, declared
from drivemtl.structures.batch import Batch
from drivemtl.structures.predictions import FramePrediction
from drivemtl.structures.state import InferenceState

# Provided by backbone + neck, which always run (the reference stream: on the reference frames of
# a clip, in training, when a scheduled stage reads it).
BASE_STREAMS = (IMAGE, BACKBONE, PIXEL, REFERENCE)


class TaskPlugin(Protocol):
    """What MultiTaskNet needs from a task (implemented by `drivemtl.tasks.Task`)."""

    name: str
    group: str
    loss_weight: float

    def build_head(self, spec: FeatureSpec) -> nn.Module: ...

    def loss(self, outputs: Any, batch: Batch) -> Tensor: ...

    def postprocess(self, outputs: Any, batch: Batch) -> list[FramePrediction]: ...

    def labeled(self, batch: Batch) -> Tensor: ...


@dataclass
class ModelOutputs(Mapping[str, Any]):
    """Raw outputs of one forward pass: a mapping head name -> outputs, plus the features."""

    features: Features
    heads: dict[str, Any] = field(default_factory=dict)

    def __getitem__(self, name: str) -> Any:
        return self.heads[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.heads)

    def __len__(self) -> int:
        return len(self.heads)


def _feature_list(value: Any) -> list[Tensor]:
    """Backbone / neck outputs as a list of maps, finest first (list, tuple, dict or container)."""
    if isinstance(value, Tensor):
        return [value]
    if isinstance(value, Mapping):
        return list(value.values())
    if isinstance(value, Sequence):
        return list(value)
    if hasattr(value, "__dataclass_fields__"):
        return [
            getattr(value, f.name)
            for f in fields(value)
            if isinstance(getattr(value, f.name), Tensor)
        ]
    raise TypeError(f"cannot read feature maps from {type(value).__name__}")


def merge_predictions(target: FramePrediction, source: FramePrediction) -> None:
    """Copy every field that `source` sets (not None) into `target`."""
    for f in fields(FramePrediction):
        if f.name == "meta":
            continue
        value = getattr(source, f.name)
        if value is not None:
            setattr(target, f.name, value)


def is_split_head(head: nn.Module) -> bool:
    """Whether a head has a separate decoder (`decode`) and predictor (`predict`)."""
    return callable(getattr(head, "decode", None)) and callable(getattr(head, "predict", None))


def head_stages(name: str, head: nn.Module) -> list[Stage]:
    """The decoder (and, for split heads, predictor) stages of task `name`'s head.

    A split head's predictor modifies the streams the head names in `predictor_modifies` (the
    two-stage detector's box head adds the detections to the object stream its decoder
    provides, so that interaction blocks on that stream run between the two stages and the
    heads reading the detections after the predictor).
    """
    path = f"heads.{name}"
    needs = declared(head, "needs", (PIXEL,))
    provides = declared(head, "provides")
    if not is_split_head(head):
        return [Stage("decoder", path, needs, (*provides, f"out:{name}"), (), name)]
    modifies = declared(head, "predictor_modifies")
    return [
        Stage("decoder", path, needs, (*provides, task_stream(name)), (), name),
        Stage("predictor", path, (task_stream(name), *needs), (f"out:{name}",), modifies, name),
    ]


def order_stages(stages: list[Stage], wanted: Iterable[str]) -> list[Stage]:
    """The stages the `wanted` streams depend on, producers before modifiers before readers.

    Modifiers of one stream keep their list order; ties go by kind (KINDS order, a predictor
    counting as a decoder), then list order.
    """
    producers: dict[str, Stage] = {}
    modifiers: dict[str, list[Stage]] = {}
    for stage in stages:
        for stream in stage.provides:
            producers.setdefault(stream, stage)
        for stream in stage.modifies:
            modifiers.setdefault(stream, []).append(stage)
    chosen: set[Stage] = set()
    todo, seen = list(wanted), set(BASE_STREAMS)
    while todo:
        stream = todo.pop()
        if stream in seen:
            if stream in BASE_STREAMS:
                for stage in modifiers.get(stream, []):
                    if stage not in chosen:
                        chosen.add(stage)
                        todo.extend(s for s in (*stage.needs, *stage.modifies) if s != stream)
            continue
        seen.add(stream)
        producer = producers.get(stream)
        if producer is None:
            readers = [s.path for s in stages if stream in (*s.needs, *s.modifies)]
            raise ValueError(f"stream {stream!r} (needed by {readers}) is provided by no stage")
        for stage in [producer, *modifiers.get(stream, [])]:
            if stage not in chosen:
                chosen.add(stage)
                todo.extend((*stage.needs, *stage.modifies))
    for stream in BASE_STREAMS:  # modifiers of a base stream run whenever it is read
        if any(stream in s.needs for s in chosen):
            chosen.update(modifiers.get(stream, []))
    return _topological(stages, chosen, producers, modifiers)


def _rank_kind(kind: str) -> str:
    return "decoder" if kind == "predictor" else kind


def _topological(
    stages: list[Stage],
    chosen: set[Stage],
    producers: dict[str, Stage],
    modifiers: dict[str, list[Stage]],
) -> list[Stage]:
    # A predictor ranks with the decoders, so it runs right after its own decoder unless a stage
    # modifies its task features (an exchange): task features are freed as early as they were
    # when each head ran whole.
    rank = {s: (KINDS.index(_rank_kind(s.kind)), i) for i, s in enumerate(stages)}
    after: dict[Stage, set[Stage]] = {s: set() for s in chosen}  # stage -> stages it waits for
    for stage in chosen:
        for stream in (*stage.needs, *stage.modifies):
            chain = [m for m in modifiers.get(stream, []) if m in chosen]
            producer = producers.get(stream)
            before = [producer] if producer in chosen and producer is not stage else []
            if stage in chain:
                before += chain[: chain.index(stage)]
            else:
                before += chain
            after[stage].update(before)
    ready = [(rank[s], s.path, s) for s in chosen if not after[s]]
    heapq.heapify(ready)
    done: list[Stage] = []
    while ready:
        *_, stage = heapq.heappop(ready)
        done.append(stage)
        for other in chosen:
            if stage in after[other]:
                after[other].discard(stage)
                if not after[other] and other not in done:
                    heapq.heappush(ready, (rank[other], other.path, other))
    if len(done) != len(chosen):
        stuck = sorted(s.path for s in chosen if s not in done)
        raise ValueError(f"the stages {stuck} depend on each other in a circle")
    return done


class MultiTaskNet(nn.Module):
    """Shared stages and a head per task (see the module docstring).

    `tasks` are the enabled task plug-ins in config order; `support` are tasks built only for a
    stream another task needs, each with the task that carries its loss (`support_owner`).
    """

    def __init__(
        self,
        backbone: nn.Module,
        neck: nn.Module,
        tasks: Mapping[str, TaskPlugin],
        support: Mapping[str, TaskPlugin] | None = None,
        *,
        adapters: Sequence[nn.Module] = (),
        groups: Mapping[str, nn.Module] | None = None,
        interactions: Sequence[nn.Module] = (),
        heads: Mapping[str, nn.Module] | None = None,
        exchanges: Sequence[nn.Module] = (),
        support_owner: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__()
        if not tasks:
            raise ValueError("MultiTaskNet needs at least one task")
        self.backbone = backbone
        self.neck = neck
        self.tasks: dict[str, TaskPlugin] = dict(tasks)
        self.support: dict[str, TaskPlugin] = dict(support or {})
        self.support_owner: dict[str, str] = dict(support_owner or {})
        self.adapters = nn.ModuleList(adapters)
        self.groups = nn.ModuleDict(dict(groups or {}))
        self.interactions = nn.ModuleList(interactions)
        self.spec = FeatureSpec(
            image_channels=int(list(backbone.out_channels)[-1]),
            pixel_channels=int(neck.out_channels),
            strides=tuple(int(s) for s in neck.strides),
            groups={g: int(m.out_channels) for g, m in self.groups.items()},
            object_vectors=object_vector_widths(self.interactions),
        )
        self.heads = nn.ModuleDict()
        for name, plugin in self._all_plugins().items():
            self.heads[name] = heads[name] if heads is not None else plugin.build_head(self.spec)
        self.exchanges = nn.ModuleList(exchanges)
        self.stage_list = self._stage_list()
        order_stages(self.stage_list, [f"out:{t}" for t in self._all_plugins()])  # checks
        self._check_groups_are_read()
        self._schedules: dict[tuple[str, ...], list[Stage]] = {}
        self._fixed = {n for n, p in self.named_parameters() if not p.requires_grad}

    def _check_groups_are_read(self) -> None:
        """A group encoder whose map no stage reads is a config mistake (e.g. a misspelt group)."""
        readers = {s for stage in self.stage_list for s in (*stage.needs, *stage.modifies)}
        for group in self.groups:
            if group_stream(group) not in readers:
                groups = sorted({p.group for p in self._all_plugins().values()})
                raise ValueError(
                    f"model.groups.{group}: no stage reads this group's features (the enabled "
                    f"tasks' groups are {groups}; dense decoders read their group's map unless "
                    "head.use_group is false)"
                )

    def _all_plugins(self) -> dict[str, TaskPlugin]:
        return head_order({**self.support, **self.tasks})

    def _stage_list(self) -> list[Stage]:
        stages = [
            Stage("backbone", "backbone", (), (IMAGE, BACKBONE)),
            Stage("neck", "neck", (BACKBONE,), (PIXEL,)),
        ]
        for i, module in enumerate(self.adapters):
            stages.append(
                Stage("adapter", f"adapters.{i}", declared(module, "needs"),
                      declared(module, "provides"), declared(module, "modifies", (PIXEL,)))
            )  # fmt: skip
        for group, module in self.groups.items():
            stages.append(
                Stage("group", f"groups.{group}", declared(module, "needs", (PIXEL,)),
                      (group_stream(group),))
            )  # fmt: skip
        for i, module in enumerate(self.interactions):
            stages.append(
                Stage("interaction", f"interactions.{i}", declared(module, "needs"),
                      declared(module, "provides"), declared(module, "modifies"))
            )  # fmt: skip
        for name, head in self.heads.items():
            stages.extend(head_stages(name, head))
        for i, module in enumerate(self.exchanges):
            stages.append(
                Stage("exchange", f"exchanges.{i}", declared(module, "needs"),
                      declared(module, "provides"), declared(module, "modifies"))
            )  # fmt: skip
        return stages

    @property
    def task_names(self) -> list[str]:
        """Names of the enabled tasks, in config order."""
        return list(self.tasks)

    @property
    def loss_weights(self) -> dict[str, float]:
        """The configured loss weight of each task (applied by the engine, not by `losses`)."""
        return {name: float(p.loss_weight) for name, p in self.tasks.items()}

    def decoder_prefixes(self) -> dict[str, list[str]]:
        """Task -> parameter-name prefixes of the heads it trains (for per-decoder fine-tuning)."""
        prefixes = {name: [f"heads.{name}."] for name in self.tasks}
        for name, owner in self.support_owner.items():
            prefixes[owner].append(f"heads.{name}.")
        return prefixes

    def stage_prefixes(self) -> dict[str, list[str]]:
        """Stage kind -> parameter-name prefixes of its modules (`@kind` freezing patterns)."""
        out: dict[str, list[str]] = {kind: [] for kind in KINDS}
        for stage in self.stage_list:
            if stage.kind == "predictor":  # a split head names its predictor's sub-modules
                head = self.get_submodule(stage.path)
                prefixes = [f"{stage.path}.{m}." for m in declared(head, "predictor_modules")]
            else:
                prefixes = [stage.prefix]
            out[stage.kind].extend(p for p in prefixes if p not in out[stage.kind])
        return out

    def fixed_parameter_names(self) -> set[str]:
        """Parameters the model itself keeps frozen (e.g. `backbone.frozen_stages`)."""
        return set(self._fixed)

    def _check_tasks(self, tasks: Iterable[str] | None) -> list[str]:
        if tasks is None:
            return self.task_names
        requested = list(tasks)
        unknown = [t for t in requested if t not in self.tasks]
        if unknown:
            raise ValueError(
                f"tasks {unknown} are not enabled in this model; enabled: {self.task_names}"
            )
        return requested

    def extract(self, images: Tensor, image_sizes: list[tuple[int, int]] | None = None) -> Features:
        """Backbone + neck once: C2..C5 and the pyramid in a Features container."""
        backbone_maps = _feature_list(self.backbone(images))
        pixel = _feature_list(self.neck(backbone_maps))
        sizes = image_sizes or [tuple(images.shape[-2:])] * images.shape[0]
        return Features(
            image=backbone_maps[-1],
            pixel=pixel,
            strides=self.spec.strides,
            input_size=(int(images.shape[-2]), int(images.shape[-1])),
            image_sizes=[(int(h), int(w)) for h, w in sizes],
            backbone=backbone_maps,
        )

    def schedule(self, tasks: Sequence[str]) -> list[Stage]:
        """The stages after backbone + neck that the heads of `tasks` need, in run order."""
        heads = [n for n in self._all_plugins() if n in self._heads_needed(tasks)]
        key = tuple(heads)
        if key not in self._schedules:
            self._schedules[key] = order_stages(self.stage_list, [f"out:{n}" for n in heads])
        return self._schedules[key]

    def _heads_needed(self, tasks: Sequence[str]) -> set[str]:
        """The requested tasks' heads and the support heads whose loss they carry."""
        return set(tasks) | {name for name, owner in self.support_owner.items() if owner in tasks}

    def _run(self, stage: Stage, features: Features, batch: Batch | None, out: ModelOutputs):
        if stage.kind in ("backbone", "neck"):
            return
        module = self.get_submodule(stage.path)
        if stage.kind == "group":
            features.groups[stage.path.split(".", 1)[1]] = module(features)
        elif stage.kind == "decoder":
            if is_split_head(module):
                features.tasks[stage.task] = module.decode(features, batch)
            else:
                out.heads[stage.task] = module(features, batch)
        elif stage.kind == "predictor":
            out.heads[stage.task] = module.predict(features.tasks[stage.task], features, batch)
        else:
            module(features)

    def forward(
        self, batch: Batch, tasks: Iterable[str] | None = None, targets: bool | None = None
    ) -> ModelOutputs:
        """Shared features once, then the stages the heads of `tasks` (default: all) need.

        With `targets` (default: in training mode) heads get the batch to sample training targets
        (RoI sampling); without, they run in inference mode.
        """
        requested = self._check_tasks(tasks)
        use_targets = self.training if targets is None else targets
        features = self.extract(batch.images, batch.image_sizes)
        outputs = ModelOutputs(features=features)
        schedule = self.schedule(requested)
        reference = batch.reference
        if reference is not None and self._reads_reference(schedule, use_targets):
            features.reference = self.reference_features(reference, objects=use_targets)
        for stage in schedule:
            self._run(stage, features, batch if use_targets else None, outputs)
        return outputs

    def _reads_reference(self, schedule: Sequence[Stage], targets: bool) -> bool:
        """Whether a scheduled stage reads the reference stream: in training any stage that
        needs it; at inference only those whose module sets `reference_at_inference` (a flow
        head, which predicts from the frame pair; a tracker head embeds the key frame alone)."""
        readers = [s for s in schedule if REFERENCE in s.needs]
        if targets:
            return bool(readers)
        return any(
            getattr(self.get_submodule(s.path), "reference_at_inference", False) for s in readers
        )

    def reference_features(self, reference: Batch, objects: bool = True) -> Features:
        """Backbone + neck on a clip's reference frames (with gradient), plus, with `objects`
        (training), the object stream's proposals / detections run in inference mode without
        gradient (as QDTrack runs its RPN on the reference frame), when some stage provides that
        stream."""
        features = self.extract(reference.images, reference.image_sizes)
        producers = [s for s in self.stage_list if OBJECTS in s.provides]
        if producers and objects:
            scratch = ModelOutputs(features=features)
            with torch.no_grad():
                for stage in order_stages(self.stage_list, [OBJECTS]):
                    self._run(stage, features, None, scratch)
        return features

    def losses(self, batch: Batch, tasks: Iterable[str] | None = None) -> dict[str, Tensor]:
        """Unweighted per-task losses; a task without labelled samples gets an exact zero.

        Heads of tasks that no sample of the batch is labelled for are not run at all.
        """
        return self.losses_and_outputs(batch, tasks)[0]

    def losses_and_outputs(
        self, batch: Batch, tasks: Iterable[str] | None = None
    ) -> tuple[dict[str, Tensor], ModelOutputs | None]:
        """`losses`, and the raw outputs they came from (None when no task is labelled), for
        training schemes that also use the outputs (output-level domain adaptation)."""
        requested = self._check_tasks(tasks)
        active = [t for t in requested if bool(self._labeled_for(t, batch).any())]
        zero = torch.zeros((), device=batch.images.device)
        losses = {t: zero for t in requested}
        if not active:
            return losses, None
        outputs = self.forward(batch, active, targets=True)
        for name in active:
            losses[name] = self.tasks[name].loss(outputs[name], batch)
        for name, owner in self.support_owner.items():
            if owner in active and name in outputs:
                losses[owner] = losses[owner] + self.support[name].loss(outputs[name], batch)
        return losses, outputs

    def _labeled_for(self, task: str, batch: Batch) -> Tensor:
        mask = self.tasks[task].labeled(batch)
        for name, owner in self.support_owner.items():
            if owner == task:
                mask = mask | self.support[name].labeled(batch)
        return mask

    @torch.no_grad()
    def predict(self, batch: Batch, tasks: Iterable[str] | None = None) -> list[FramePrediction]:
        """Typed predictions per sample in original-image coordinates for `tasks` (default: all)."""
        return self.predict_with_state(batch, None, tasks)[0]

    @torch.no_grad()
    def predict_with_state(
        self, batch: Batch, state: InferenceState | None, tasks: Iterable[str] | None = None
    ) -> tuple[list[FramePrediction], InferenceState]:
        """Predictions for `tasks` plus the inference state to pass with the next frames.

        The network itself is stateless; a task that remembers earlier frames (a tracker)
        implements `update_state(predictions, outputs, batch, states)`, `states[i]` being its
        dict for sample i's video (see `drivemtl.structures.state`).
        """
        requested = with_required(self.tasks, self._check_tasks(tasks))
        outputs = self.forward(batch, requested, targets=False)
        return finish_predictions(self.tasks, outputs, batch, state, requested)


def with_required(tasks: Mapping[str, Any], requested: Sequence[str]) -> list[str]:
    """`requested` plus the tasks they require (a task's `requires`), each required task placed
    before the first task that requires it; otherwise in the given order."""
    out: list[str] = []

    def visit(name: str, path: tuple[str, ...]) -> None:
        if name in out:
            return
        if name in path:
            raise ValueError(f"tasks {[*path, name]} require each other in a circle")
        for needed in getattr(tasks.get(name), "requires", ()):
            visit(needed, (*path, name))
        out.append(name)

    for name in requested:
        visit(name, ())
    return out


def finish_predictions(
    tasks: Mapping[str, TaskPlugin],
    outputs: Mapping[str, Any],
    batch: Batch,
    state: InferenceState | None,
    requested: Sequence[str],
) -> tuple[list[FramePrediction], InferenceState]:
    """Raw head outputs -> typed predictions and the updated inference state.

    The runtime part after the network (each task's `postprocess`, then `update_state`), shared
    by `MultiTaskNet.predict_with_state` and the exported-model runtime (`drivemtl.export`).
    Every task's `update_state` sees the predictions of all tasks, and the tasks a task
    `requires` update before it (so it can read, e.g., the track ids another task assigned).
    """
    requested = [t for t in with_required(tasks, requested) if t in requested]
    state = state if state is not None else InferenceState()
    predictions = [FramePrediction(meta=meta) for meta in batch.metas]
    for name in requested:
        for target, source in zip(
            predictions, tasks[name].postprocess(outputs[name], batch), strict=True
        ):
            merge_predictions(target, source)
    videos = [state.for_frame(meta) for meta in batch.metas]
    for name in requested:
        update = getattr(tasks[name], "update_state", None)
        if update is not None:
            update(predictions, outputs[name], batch, [v.of(name) for v in videos])
    return predictions, state


def build_backbone(cfg: ModelConfig) -> nn.Module:
    """The configured backbone from the BACKBONES registry, with local weights when given."""
    from drivemtl.models.backbones import BACKBONES

    options = cfg.backbone
    backbone = BACKBONES.get(options.type)(options)
    weights = getattr(options, "weights", None)
    # A backbone whose factory reads its checkpoint itself (CLIP: the architecture is inferred
    # from it) says so with `loaded_weights`.
    if weights is not None and getattr(backbone, "loaded_weights", None) is None:
        from drivemtl.models.weights import load_weights

        load_weights(backbone, weights)
    return backbone


def build_neck(cfg: ModelConfig, in_channels: list[int]) -> nn.Module:
    """The configured neck from the NECKS registry."""
    from drivemtl.models.necks import NECKS

    return NECKS.get(cfg.neck.type)(cfg.neck, in_channels)


def head_order(plugins: Mapping[str, Any]) -> dict[str, Any]:
    """Heads whose streams other heads need first (so they are built and run first), then the
    rest in config order."""
    needed = {s for p in plugins.values() for s in getattr(p, "needs", ())}
    first = {n: p for n, p in plugins.items() if set(getattr(p, "provides", ())) & needed}
    return {**first, **plugins}


def object_vector_widths(interactions: Iterable[nn.Module]) -> dict[str, int]:
    """Task -> width of the task's own object vectors that the interaction blocks write (each
    block's `object_vectors`), for the task's RoI head to size the layer that reads them."""
    widths: dict[str, int] = {}
    for module in interactions:
        for task, width in dict(getattr(module, "object_vectors", None) or {}).items():
            if widths.setdefault(task, int(width)) != int(width):
                raise ValueError(
                    f"interaction blocks write object vectors of task {task!r} with widths "
                    f"{widths[task]} and {width}"
                )
    return widths


def _build_list(registry: Any, items: Sequence[Any], where: str, context: StageContext):
    modules = []
    for index, options in enumerate(items):
        named = replace(context, name=f"{where}.{index}")
        modules.append(registry.get(options.type)(options, named))
    return modules


def _support_tasks(tasks: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """Support tasks for streams needed but not provided by the enabled tasks, and their owners."""
    from drivemtl.tasks import STREAM_PROVIDERS, TASKS

    provided = {s for t in tasks.values() for s in t.provides}
    support: dict[str, Any] = {}
    owners: dict[str, str] = {}
    for name, task in tasks.items():
        for stream in task.needs:
            if stream in provided or stream not in STREAM_PROVIDERS:
                continue
            provider = STREAM_PROVIDERS.get(stream)
            support[provider] = TASKS.get(provider)(task.provider_config(stream))
            support[provider].label_tasks = (name,)
            owners[provider] = name
            provided.update(support[provider].provides)
    return support, owners


def _check_required(tasks: Mapping[str, Any]) -> None:
    """Every task's `requires` must be enabled too (a ConfigError naming the task's key)."""
    for name, task in tasks.items():
        missing = [t for t in getattr(task, "requires", ()) if t not in tasks]
        if missing:
            raise ConfigError(
                f"model.tasks.{name}: needs the task(s) {missing} enabled as well (it works on "
                f"their predictions); enabled: {sorted(tasks)}"
            )


def build_model(cfg: ModelConfig) -> MultiTaskNet:
    """MultiTaskNet from a ModelConfig: every stage, one head per task in `cfg.tasks`."""
    from drivemtl.models.adapters import ADAPTERS
    from drivemtl.models.exchanges import EXCHANGES
    from drivemtl.models.groups import GROUP_ENCODERS
    from drivemtl.models.interactions import INTERACTIONS
    from drivemtl.tasks import TASKS  # tasks sit one layer up; looked up by name at build time

    if not cfg.tasks:
        raise ValueError("model.tasks is empty: enable at least one task")
    tasks = {name: TASKS.get(name)(task_cfg) for name, task_cfg in cfg.tasks.items()}
    _check_required(tasks)
    support, owners = _support_tasks(tasks)
    backbone = build_backbone(cfg)
    neck = build_neck(cfg, [int(c) for c in backbone.out_channels])
    spec = FeatureSpec(
        image_channels=int(list(backbone.out_channels)[-1]),
        pixel_channels=int(neck.out_channels),
        strides=tuple(int(s) for s in neck.strides),
    )
    groups_of = {name: t.group for name, t in tasks.items()}
    classes_of = {name: tuple(getattr(t, "classes", ()) or ()) for name, t in tasks.items()}
    context = StageContext(spec, groups_of, task_classes=classes_of)
    adapters = _build_list(ADAPTERS, cfg.adapters, "adapters", context)
    groups = {
        g: GROUP_ENCODERS.get(o.type)(o, StageContext(spec, groups_of, name=g))
        for g, o in cfg.groups.items()
    }
    spec = FeatureSpec(spec.image_channels, spec.pixel_channels, spec.strides,
                       {g: int(m.out_channels) for g, m in groups.items()})  # fmt: skip
    interactions = _build_list(INTERACTIONS, cfg.interactions, "interactions",
                               StageContext(spec, groups_of))  # fmt: skip
    spec = replace(spec, object_vectors=object_vector_widths(interactions))
    heads = {name: p.build_head(spec) for name, p in head_order({**support, **tasks}).items()}
    channels = {n: int(getattr(h, "out_channels", 0)) for n, h in heads.items() if is_split_head(h)}
    exchanges = _build_list(EXCHANGES, cfg.exchanges, "exchanges",
                            StageContext(spec, groups_of, channels))  # fmt: skip
    return MultiTaskNet(backbone, neck, tasks, support, adapters=adapters, groups=groups,
                        interactions=interactions, heads=heads, exchanges=exchanges,
                        support_owner=owners)  # fmt: skip


__all__ = [
    "ModelOutputs",
    "MultiTaskNet",
    "TaskConfig",
    "build_model",
    "finish_predictions",
    "with_required",
]
