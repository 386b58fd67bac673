"""Every extension point of the network, exercised by parts defined only in this file.

Each part is registered here (no file under `src/` knows it), selected by `type` in a config,
and checked for what it computes and where the stage graph runs it: an adapter on P5, an
interaction block between the segmentation and localization groups, an exchange module between
two task decoders, a new backbone with its own options, and a new head family with its own
criterion for semantic segmentation.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from batches import make_batch, tiny_config
from pydantic import Field
from torch import Tensor, nn

from drivemtl.config.base import PluginOptions
from drivemtl.config.loader import ConfigError
from drivemtl.models import build_model
from drivemtl.models.adapters import ADAPTERS, AdapterOptions
from drivemtl.models.backbones import BACKBONES
from drivemtl.models.config import ModelConfig
from drivemtl.models.exchanges import EXCHANGES, ExchangeOptions
from drivemtl.models.features import OBJECTS, Features, FeatureSpec, group_stream, task_stream
from drivemtl.models.interactions import INTERACTIONS, InteractionOptions
from drivemtl.models.stage import FeatureStage, StageContext
from drivemtl.structures.batch import Batch
from drivemtl.tasks import HEAD_FAMILIES, HeadFamily, HeadOptions

# --- an adapter on P5 ------------------------------------------------------------------------


class GainOptions(AdapterOptions):
    gain: float = 3.0


class GainAdapter(FeatureStage):
    """Multiplies one pixel level by a learnable gain (a stand-in for a language adapter)."""

    modifies = ("pixel",)

    def __init__(self, options: GainOptions) -> None:
        super().__init__()
        self.level = options.level
        self.gain = nn.Parameter(torch.tensor(float(options.gain)))

    def forward(self, features: Features) -> None:
        index = features.level_index(self.level)
        features.pixel[index] = features.pixel[index] * self.gain


SEEN_CONTEXTS: list[StageContext] = []


@ADAPTERS.register("test_gain", options=GainOptions)
def gain_adapter(options: GainOptions, context: StageContext) -> GainAdapter:
    SEEN_CONTEXTS.append(context)
    return GainAdapter(options)


# --- an interaction block between two groups -------------------------------------------------


class ObjectCountOptions(InteractionOptions):
    scale: float = 0.5


class ObjectCountInteraction(FeatureStage):
    """Adds scale x (number of proposals of the image) to the segmentation group's map."""

    def __init__(self, options: ObjectCountOptions) -> None:
        super().__init__()
        self.scale = options.scale
        self.needs = (OBJECTS,)
        self.modifies = tuple(group_stream(g) for g in options.groups if g != "localization")

    def forward(self, features: Features) -> None:
        objects = features.require_objects("test_object_count")
        counts = torch.tensor([float(len(p)) for p in objects.proposals])
        shared = features.groups["segmentation"]
        features.groups["segmentation"] = (
            shared + self.scale * counts.to(shared)[:, None, None, None]
        )


@INTERACTIONS.register("test_object_count", options=ObjectCountOptions)
def object_count(options: ObjectCountOptions, context: StageContext) -> ObjectCountInteraction:
    return ObjectCountInteraction(options)


# --- an exchange module between task decoders ------------------------------------------------


class MixOptions(ExchangeOptions):
    alpha: float = 0.25


class MixExchange(FeatureStage):
    """f_a <- f_a + alpha * f_b for the first two tasks (1x1 projection when widths differ)."""

    def __init__(self, options: MixOptions, context: StageContext) -> None:
        super().__init__()
        self.a, self.b = options.tasks[:2]
        self.alpha = options.alpha
        self.needs = (task_stream(self.b),)
        self.modifies = (task_stream(self.a),)
        widths = context.task_channels
        self.project = nn.Conv2d(widths[self.b], widths[self.a], 1, bias=False)
        nn.init.dirac_(self.project.weight) if widths[self.a] == widths[self.b] else None

    def forward(self, features: Features) -> None:
        mixed = features.tasks[self.a] + self.alpha * self.project(features.tasks[self.b])
        features.tasks[self.a] = mixed


@EXCHANGES.register("test_mix", options=MixOptions)
def mix_exchange(options: MixOptions, context: StageContext) -> MixExchange:
    return MixExchange(options, context)


# --- a new backbone with its own options -----------------------------------------------------


class PatchOptions(PluginOptions):
    channels: int = Field(12, gt=0)


class PatchBackbone(nn.Module):
    """Four strided convs: C2..C5 at strides 4..32, all `channels` wide."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, channels, 4, stride=4)
        self.downs = nn.ModuleList(nn.Conv2d(channels, channels, 2, stride=2) for _ in range(3))
        self.out_channels = [channels] * 4
        self.strides = [4, 8, 16, 32]

    def forward(self, images: Tensor) -> list[Tensor]:
        maps = [F.relu(self.stem(images))]
        for down in self.downs:
            maps.append(F.relu(down(maps[-1])))
        return maps


@BACKBONES.register("test_patch", options=PatchOptions)
def patch_backbone(options: PatchOptions) -> PatchBackbone:
    return PatchBackbone(options.channels)


# --- a new head family with its own criterion ------------------------------------------------


class DiceOptions(HeadOptions):
    type: str = "test_dice"
    smooth: float = 1.0


class LinearPixelHead(nn.Module):
    """A 1x1 conv on the finest pixel level, upsampled to the input (raw class logits)."""

    def __init__(self, spec: FeatureSpec, classes: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(spec.pixel_channels, classes, 1)

    def forward(self, features: Features, batch: Batch | None = None) -> dict[str, Tensor]:
        logits = self.conv(features.pixel[0])
        size = features.input_size
        return {"logits": F.interpolate(logits, size=size, mode="bilinear", align_corners=False)}


def soft_dice(logits: Tensor, target: Tensor, smooth: float, ignore: int = 255) -> Tensor:
    """1 - mean over classes of (2 |P.Y| + s) / (|P| + |Y| + s), ignored pixels left out."""
    valid = (target != ignore).unsqueeze(1).to(logits.dtype)
    probs = logits.softmax(dim=1) * valid
    onehot = F.one_hot(target.clamp(max=logits.shape[1] - 1), logits.shape[1])
    onehot = onehot.permute(0, 3, 1, 2).to(logits.dtype) * valid
    inter = (probs * onehot).sum(dim=(0, 2, 3))
    total = probs.sum(dim=(0, 2, 3)) + onehot.sum(dim=(0, 2, 3))
    return 1 - ((2 * inter + smooth) / (total + smooth)).mean()


@HEAD_FAMILIES.register("test_dice")
class DiceFamily(HeadFamily):
    """Per-pixel logits trained with the soft-Dice loss instead of the task's cross entropy."""

    Options = DiceOptions
    kinds = ("dense",)

    def build(self, spec: FeatureSpec) -> nn.Module:
        return LinearPixelHead(spec, self.task.branches()["logits"])

    def loss(self, outputs: dict[str, Tensor], batch: Batch) -> Tensor:
        mask = self.task.labeled(batch)
        target = getattr(batch, self.task.target_field)[mask].long()
        return soft_dice(outputs["logits"][mask], target, self.options.smooth)


# --- helpers ---------------------------------------------------------------------------------


def config_with(tasks: tuple[str, ...], **sections) -> ModelConfig:
    """The tiny test model config with extra model sections (validated like a config file)."""
    return ModelConfig.model_validate({**tiny_config(tasks).model_dump(), **sections})


def capture_inputs(module: nn.Module) -> list[Tensor]:
    """Record the first positional input of every call of `module`."""
    seen: list[Tensor] = []
    module.register_forward_pre_hook(lambda _m, args: seen.append(args[0]))
    return seen


# --- tests -----------------------------------------------------------------------------------


def test_adapter_on_p5_scales_what_every_head_reads() -> None:
    torch.manual_seed(0)
    cfg = config_with(("semantic",), adapters=[{"type": "test_gain", "level": "p5", "gain": 3.0}])
    model = build_model(cfg).eval()
    assert [n for n, _ in model.named_parameters() if n.startswith("adapters.")] == [
        "adapters.0.gain"
    ]
    batch = make_batch(1, ("semantic",))
    p5_in = capture_inputs(model.heads["semantic"].scales[3])
    with torch.no_grad():
        out = model(batch)
        plain = model.extract(batch.images, batch.image_sizes)
    assert torch.allclose(p5_in[0], 3.0 * plain.pixel[plain.level_index("p5")])
    assert torch.equal(out.features.pixel[0], plain.pixel[0])  # other levels untouched
    assert model.stage_prefixes()["adapter"] == ["adapters.0."]


def test_adapters_are_built_knowing_each_tasks_class_names() -> None:
    SEEN_CONTEXTS.clear()
    cfg = config_with(("semantic", "drivable"), adapters=[{"type": "test_gain"}])
    build_model(cfg)
    (context,) = SEEN_CONTEXTS
    assert context.name == "adapters.0"
    assert context.task_classes["drivable"] == ("direct", "alternative", "background")
    assert context.task_classes["semantic"][:2] == ("road", "sidewalk")
    assert len(context.task_classes["semantic"]) == 19


def test_adapter_level_is_validated_with_its_key() -> None:
    with pytest.raises(ValueError, match=r"adapters\.0\.level"):
        config_with(("semantic",), adapters=[{"type": "test_gain", "level": "c5"}])
    with pytest.raises(ValueError, match=r"unknown adapter 'nope'; known: .*test_gain"):
        config_with(("semantic",), adapters=[{"type": "nope"}])


def test_interaction_between_groups_runs_after_the_objects_and_before_the_decoders() -> None:
    torch.manual_seed(0)
    cfg = config_with(
        ("semantic", "detection"),
        groups={"segmentation": {"type": "semantic_fpn", "channels": 16}},
        interactions=[{"type": "test_object_count", "groups": ["segmentation", "localization"]}],
    )
    model = build_model(cfg).eval()
    order = [s.path for s in model.schedule(["semantic"])]
    assert order.index("heads.detection") < order.index("interactions.0")
    assert order.index("groups.segmentation") < order.index("interactions.0")
    assert order.index("interactions.0") < order.index("heads.semantic")
    batch = make_batch(2, ("semantic",))
    with torch.no_grad():
        out = model(batch, ["semantic"])
        group = model.groups["segmentation"](model.extract(batch.images, batch.image_sizes))
    counts = torch.tensor([float(len(p)) for p in out.features.objects.proposals])
    expected = group + 0.5 * counts[:, None, None, None]
    assert torch.allclose(out.features.tasks["semantic"], expected, atol=1e-6)
    head = model.heads["semantic"]
    assert torch.allclose(out["semantic"]["logits"], head.predict(expected, out.features)["logits"])


def test_group_encoder_is_shared_by_the_group_and_replaces_per_task_aggregation() -> None:
    torch.manual_seed(0)
    cfg = config_with(
        ("semantic", "drivable", "depth"),
        groups={"segmentation": {"type": "semantic_fpn", "channels": 16}},
    )
    model = build_model(cfg)
    names = [n for n, _ in model.named_parameters()]
    assert not any(n.startswith(("heads.semantic.scales", "heads.drivable.scales")) for n in names)
    assert any(n.startswith("heads.depth.scales") for n in names)  # geometry: its own
    batch = make_batch(1, ("semantic", "drivable"))
    seen = capture_inputs(model.groups["segmentation"])
    with torch.no_grad():
        out = model.eval()(batch)
    assert len(seen) == 1  # computed once for both decoders
    assert out.features.tasks["semantic"] is out.features.tasks["drivable"]
    model.train()
    losses = model.losses(batch, ["semantic", "drivable"])
    (losses["semantic"] + losses["drivable"]).backward()
    grads = [p.grad for p in model.groups["segmentation"].parameters()]
    assert all(g is not None for g in grads) and sum(float(g.abs().sum()) for g in grads) > 0


def test_a_group_encoder_nobody_reads_is_an_error() -> None:
    cfg = config_with(("semantic",), groups={"segmantation": {"type": "semantic_fpn"}})
    with pytest.raises(ValueError, match=r"model.groups.segmantation: no stage reads"):
        build_model(cfg)


def test_exchange_module_mixes_task_features_before_the_predictors() -> None:
    torch.manual_seed(0)
    cfg = config_with(
        ("semantic", "depth"), exchanges=[{"type": "test_mix", "tasks": ["semantic", "depth"]}]
    )
    model = build_model(cfg).eval()
    order = [(s.kind, s.path) for s in model.schedule(["semantic"])]
    assert order.index(("decoder", "heads.depth")) < order.index(("exchange", "exchanges.0"))
    assert order.index(("exchange", "exchanges.0")) < order.index(("predictor", "heads.semantic"))
    batch = make_batch(1, ("semantic",))
    with torch.no_grad():
        out = model(batch, ["semantic"])
        plain = model.extract(batch.images, batch.image_sizes)
        f_sem = model.heads["semantic"].decode(plain)
        f_depth = model.heads["depth"].decode(plain)
        expected = model.heads["semantic"].predict(f_sem + 0.25 * f_depth, plain)["logits"]
    assert torch.allclose(out["semantic"]["logits"], expected, atol=1e-6)
    assert "depth" not in out.heads  # the depth predictor is not needed for semantic
    with pytest.raises(ValueError, match=r"exchanges\.0: tasks \['normals'\] are not in"):
        config_with(
            ("semantic",), exchanges=[{"type": "test_mix", "tasks": ["semantic", "normals"]}]
        )


def test_new_backbone_with_its_own_options_trains_every_head() -> None:
    torch.manual_seed(0)
    cfg = config_with(("semantic", "tagging"), backbone={"type": "test_patch", "channels": 12})
    model = build_model(cfg)
    assert model.spec.image_channels == 12
    assert model.stage_prefixes()["backbone"] == ["backbone."]
    model.train()
    losses = model.losses(make_batch(2, ("semantic", "tagging")))
    sum(losses.values()).backward()
    assert model.backbone.stem.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match=r"backbone\.width"):
        config_with(("semantic",), backbone={"type": "test_patch", "width": 8})


def test_new_head_family_brings_its_own_criterion() -> None:
    torch.manual_seed(0)
    cfg = config_with(("semantic",))
    cfg.tasks["semantic"].head = {"type": "test_dice", "smooth": 1.0}
    model = build_model(cfg)
    batch = make_batch(2, ("semantic",), labeled=[True, False])
    model.train()
    loss = model.losses(batch)["semantic"]
    logits = model(batch, targets=True)["semantic"]["logits"]
    target = batch.semantic[:1].long()
    # float64 reference of the soft-Dice loss on the labelled sample only
    probs = logits[:1].detach().double().softmax(dim=1)
    valid = (target != 255)[:, None]
    onehot = torch.stack([(target == c) for c in range(logits.shape[1])], dim=1) & valid
    probs = probs * valid
    dice = [
        (2 * (probs[:, c] * onehot[:, c]).sum() + 1) / (probs[:, c].sum() + onehot[:, c].sum() + 1)
        for c in range(logits.shape[1])
    ]
    assert math.isclose(float(loss.detach()), 1 - float(torch.stack(dice).mean()), rel_tol=1e-5)
    loss.backward()
    assert model.heads["semantic"].conv.weight.grad.abs().sum() > 0
    preds = model.eval().predict(batch)
    assert preds[0].semantic.shape == tuple(batch.metas[0].orig_size)


def test_head_family_must_serve_the_task_kind() -> None:
    cfg = tiny_config(("tagging",))
    cfg.tasks["tagging"].head = {"type": "test_dice"}
    with pytest.raises(
        ConfigError,
        match=r"unknown head family 'test_dice' for a task of kind 'image'; known: global_pool",
    ):
        build_model(cfg)
