"""MultiTaskNet: backbone -> neck (FPN) -> heads{task}, with shared features computed once.

The network knows tasks only through a small protocol (build_head / loss / postprocess), so the
task plug-ins (`drivemtl.tasks`) stay one layer above; `build_model` looks them up by name.
Parameter names are `backbone.*`, `neck.*` and `heads.<name>.*`. The detection head (RPN + box
head) is built whenever detection, instance or pose is enabled, because the mask and keypoint heads
refine its proposals; when detection itself is not a task, its loss is added to the loss of the
first enabled localization task that owns it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from drivemtl.config.schema import ModelConfig, TaskConfig
from drivemtl.models.heads.features import Features, FeatureSpec
from drivemtl.structures.batch import Batch
from drivemtl.structures.predictions import FramePrediction

LOCALIZATION_TASKS = ("detection", "instance", "pose")
DETECTION_HEAD = "detection"


class TaskPlugin(Protocol):
    """What MultiTaskNet needs from a task (implemented by `drivemtl.tasks.Task`)."""

    name: str
    requires: tuple[str, ...]
    loss_weight: float

    def build_head(self, spec: FeatureSpec) -> nn.Module: ...

    def loss(self, outputs: Any, batch: Batch) -> Tensor: ...

    def postprocess(self, outputs: Any, batch: Batch) -> list[FramePrediction]: ...


@dataclass
class ModelOutputs(Mapping[str, Any]):
    """Raw outputs of one forward pass: a mapping head name -> outputs, plus the shared features."""

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


class MultiTaskNet(nn.Module):
    """One shared feature extractor and a head per task (see the module docstring).

    `tasks` are the enabled task plug-ins in config order; `providers` are heads built for a
    dependency only (the detection head when only instance / pose are enabled).
    """

    def __init__(
        self,
        backbone: nn.Module,
        neck: nn.Module,
        tasks: Mapping[str, TaskPlugin],
        providers: Mapping[str, TaskPlugin] | None = None,
    ) -> None:
        super().__init__()
        if not tasks:
            raise ValueError("MultiTaskNet needs at least one task")
        self.backbone = backbone
        self.neck = neck
        self.tasks: dict[str, TaskPlugin] = dict(tasks)
        self.providers: dict[str, TaskPlugin] = dict(providers or {})
        self.spec = FeatureSpec(
            image_channels=int(list(backbone.out_channels)[-1]),
            pixel_channels=int(neck.out_channels),
            strides=tuple(int(s) for s in neck.strides),
        )
        self.heads = nn.ModuleDict()
        for name, plugin in self._all_plugins().items():
            self.heads[name] = plugin.build_head(self.spec)
        for name, plugin in self.tasks.items():
            for dependency in plugin.requires:
                if dependency not in self.heads:
                    raise ValueError(f"task {name!r} needs head {dependency!r}, which is not built")
        # The task that carries the loss of each provider head (e.g. detection -> instance).
        self.provider_owner: dict[str, str] = {}
        for provider in self.providers:
            owner = next((t for t, p in self.tasks.items() if provider in p.requires), None)
            if owner is not None:
                self.provider_owner[provider] = owner

    def _all_plugins(self) -> dict[str, TaskPlugin]:
        plugins = dict(self.providers)
        plugins.update(self.tasks)
        # Heads another head depends on run (and are built) first.
        ordered = {
            n: p for n, p in plugins.items() if any(n in q.requires for q in plugins.values())
        }
        ordered.update(plugins)
        return ordered

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
        for provider, owner in self.provider_owner.items():
            prefixes[owner].append(f"heads.{provider}.")
        return prefixes

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
        """Backbone + neck once: C2..C5 and P2..P6 in a Features container."""
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

    def _heads_to_run(self, tasks: list[str]) -> list[str]:
        needed = set(tasks)
        for task in tasks:
            needed.update(self.tasks[task].requires)
        return [name for name in self._all_plugins() if name in needed]

    def forward(
        self, batch: Batch, tasks: Iterable[str] | None = None, targets: bool | None = None
    ) -> ModelOutputs:
        """Shared features once, then the heads of `tasks` (default: all) and their dependencies.

        With `targets` (default: in training mode) heads get the batch to sample training targets
        (RoI sampling); without, they run in inference mode.
        """
        requested = self._check_tasks(tasks)
        use_targets = self.training if targets is None else targets
        features = self.extract(batch.images, batch.image_sizes)
        outputs = ModelOutputs(features=features)
        for name in self._heads_to_run(requested):
            outputs.heads[name] = self.heads[name](features, batch if use_targets else None)
        return outputs

    def losses(self, batch: Batch, tasks: Iterable[str] | None = None) -> dict[str, Tensor]:
        """Unweighted per-task losses; a task without labelled samples gets an exact zero.

        Heads of tasks that no sample of the batch is labelled for are not run at all.
        """
        requested = self._check_tasks(tasks)
        active = [t for t in requested if bool(self._labeled_for(t, batch).any())]
        zero = torch.zeros((), device=batch.images.device)
        losses = {t: zero for t in requested}
        if not active:
            return losses
        outputs = self.forward(batch, active, targets=True)
        for name in active:
            losses[name] = self.tasks[name].loss(outputs[name], batch)
        for provider, owner in self.provider_owner.items():
            if owner in active and provider in outputs:
                losses[owner] = losses[owner] + self.providers[provider].loss(
                    outputs[provider], batch
                )
        return losses

    def _labeled_for(self, task: str, batch: Batch) -> Tensor:
        mask = batch.is_labeled(task)
        for provider, owner in self.provider_owner.items():
            if owner == task:
                mask = mask | self.providers[provider].labeled(batch)  # type: ignore[attr-defined]
        return mask

    @torch.no_grad()
    def predict(self, batch: Batch, tasks: Iterable[str] | None = None) -> list[FramePrediction]:
        """Typed predictions per sample in original-image coordinates for `tasks` (default: all)."""
        requested = self._check_tasks(tasks)
        outputs = self.forward(batch, requested, targets=False)
        predictions = [FramePrediction(meta=meta) for meta in batch.metas]
        for name in requested:
            for target, source in zip(
                predictions, self.tasks[name].postprocess(outputs[name], batch), strict=True
            ):
                merge_predictions(target, source)
        return predictions


def build_backbone(cfg: ModelConfig) -> nn.Module:
    """The configured backbone from the BACKBONES registry, with local weights when given."""
    from drivemtl.models.backbones import BACKBONES

    options = cfg.backbone
    backbone = BACKBONES.get(options.name)(
        width=options.width, frozen_stages=options.frozen_stages, norm=options.norm
    )
    if options.weights is not None:
        from drivemtl.models.weights import load_weights

        load_weights(backbone, options.weights)
    return backbone


def build_neck(cfg: ModelConfig, in_channels: list[int]) -> nn.Module:
    """The configured neck (FPN) from the NECKS registry."""
    from drivemtl.models.necks import NECKS

    options = cfg.neck
    return NECKS.get(options.name)(
        in_channels=in_channels,
        out_channels=options.out_channels,
        norm=None if options.norm == "none" else options.norm,
    )


def build_model(cfg: ModelConfig) -> MultiTaskNet:
    """MultiTaskNet from a ModelConfig: backbone, neck and one head per task in `cfg.tasks`."""
    from drivemtl.tasks import TASKS  # tasks sit one layer up; looked up by name at build time

    if not cfg.tasks:
        raise ValueError("model.tasks is empty: enable at least one task")
    tasks = {name: TASKS.get(name)(task_cfg) for name, task_cfg in cfg.tasks.items()}
    providers: dict[str, TaskPlugin] = {}
    localization = [t for t in LOCALIZATION_TASKS if t in tasks]
    if localization and DETECTION_HEAD not in tasks:
        owner = tasks[localization[0]]
        detector_options = getattr(owner.options, "detector", {})
        detector = TASKS.get(DETECTION_HEAD)(TaskConfig(head=dict(detector_options)))
        detector.label_tasks = (localization[0],)  # type: ignore[attr-defined]
        providers[DETECTION_HEAD] = detector
    backbone = build_backbone(cfg)
    neck = build_neck(cfg, [int(c) for c in backbone.out_channels])
    return MultiTaskNet(backbone, neck, tasks, providers)
