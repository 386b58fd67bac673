"""Parameters, MACs and peak activation memory per stage (shared stages, each task head).

MACs are counted by `torch.utils.flop_counter.FlopCounterMode` during one inference forward pass
on a blank image (MACs = FLOPs / 2; convolutions and matrix products, which dominate; resampling
and RoIAlign gathers are not counted). The pass runs on the `meta` device (shapes only, no
compute) when the model allows it, else for real on the model's device: RoI heads (NMS, top-k of
proposals) need real values, and are counted on what the current weights produce.

How many detections the RoI heads (masks, keypoints, track embeddings) run on is data-dependent:
by default, what the current weights make of the blank image (random weights: up to the
detector's `detections_per_image`, of whatever classes; a trained model: next to none). With
`rois_per_image=N` every object-stream provider's detections are replaced, for the count, by N
boxes per image tiling the image, their classes cycling over the detector's classes (so a
keypoint head runs on the person classes' share of them): a fixed, comparable workload.

Deformable convolutions (`DeformConv2dPack`, pure PyTorch) are counted as their offset / mask
convolution plus the main im2col matrix product (the bilinear sampling is not counted, like
other resampling), i.e. a DCN layer reports the MACs of two convolutions.

A head that reads a reference frame at inference (`reference_at_inference`: the flow decoder,
which runs on the key and reference frames' features) is counted on a second pass whose blank
batch carries a blank reference frame; the reference frame's backbone + neck pass is not added
to the shared stages (in a video it is the neighbouring frame's own pass).

The single-task column counts, for every enabled task, the network a single-task model of it
needs: the backbone, the neck when anything of it reads the pixel features (a tagging model is
the backbone and its classifier, as VTDNet's single-task tagging baseline), and every stage its
head, the heads of the tasks it `requires` (MOTS: MOT + instance) and their support heads
depend on (group encoders, support heads: an instance model is backbone + neck + detector +
mask head), without the cross-task stages (interaction and exchange blocks). `ratio` reads the
unified network's cost over their sum.

Peak activation memory (`model_memory`) is counted by `drivemtl.models.memory`: the largest sum
of simultaneously live activation bytes of an inference pass, overall and while each stage runs.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from drivemtl.models.features import OBJECTS, PIXEL, REFERENCE, Features
from drivemtl.models.memory import (
    META_ERRORS,
    MemoryProfile,
    StageMemory,
    measure,
    meta_call,
    meta_twins,
    stage_labels,
)
from drivemtl.models.multitask import MultiTaskNet, is_split_head, order_stages, with_required
from drivemtl.structures.batch import Batch
from drivemtl.structures.instances import Instances
from drivemtl.structures.sample import SampleMeta


@dataclass(frozen=True)
class ComponentCost:
    """Parameters and multiply-accumulates of one component for one input image."""

    name: str
    params: int
    macs: int


@dataclass(frozen=True)
class ModelSummary:
    """Costs of the shared stages (backbone, neck, adapters, group encoders, interaction and
    exchange blocks) and of each task head at `input_size` (H, W).

    `single_task`: each enabled task -> the components a single-task model of it needs (empty:
    the shared stages plus each head, the reading before dependencies were tracked); `method`:
    how MACs were counted ("meta" or the device the pass ran on); `rois_per_image`: the fixed
    number of detections the RoI heads were counted on (None: what the weights produced).
    """

    input_size: tuple[int, int]
    shared: list[ComponentCost]
    heads: list[ComponentCost]
    single_task: dict[str, tuple[str, ...]] = field(default_factory=dict)
    method: str = "cpu"
    rois_per_image: int | None = None

    def component(self, name: str) -> ComponentCost:
        """The cost of component `name` (KeyError naming the known ones)."""
        for cost in [*self.shared, *self.heads]:
            if cost.name == name:
                return cost
        known = [c.name for c in [*self.shared, *self.heads]]
        raise KeyError(f"no component {name!r}; components: {known}")

    def task_macs(self, task: str) -> int:
        """MACs of a single-task model of `task` (every component it needs)."""
        return sum(self.component(n).macs for n in self.single_task[task])

    def task_params(self, task: str) -> int:
        """Parameters of a single-task model of `task`."""
        return sum(self.component(n).params for n in self.single_task[task])

    @property
    def shared_params(self) -> int:
        """Parameters of the shared stages."""
        return sum(c.params for c in self.shared)

    @property
    def shared_macs(self) -> int:
        """MACs of the shared stages."""
        return sum(c.macs for c in self.shared)

    @property
    def total_params(self) -> int:
        """Parameters of the whole network."""
        return self.shared_params + sum(c.params for c in self.heads)

    @property
    def total_macs(self) -> int:
        """MACs of one forward pass through every head."""
        return self.shared_macs + sum(c.macs for c in self.heads)

    @property
    def single_task_macs(self) -> int:
        """MACs of one single-task network per enabled task (with its dependencies), summed."""
        if not self.single_task:
            return sum(self.shared_macs + c.macs for c in self.heads)
        return sum(self.task_macs(t) for t in self.single_task)

    @property
    def single_task_params(self) -> int:
        """Parameters of one single-task network per enabled task, summed."""
        if not self.single_task:
            return sum(self.shared_params + c.params for c in self.heads)
        return sum(self.task_params(t) for t in self.single_task)

    def ratio(self) -> float:
        """Unified MACs / sum of single-task MACs (VTDNet reports about 0.2 for its ten tasks)."""
        return self.total_macs / max(self.single_task_macs, 1)


def blank_batch(
    input_size: tuple[int, int],
    device: torch.device | str = "cpu",
    batch_size: int = 1,
    reference: bool = False,
) -> Batch:
    """A batch of `batch_size` zero images, unlabelled, to trace costs (with `reference`, each
    with a blank reference frame, for heads that read one at inference)."""
    references = [blank_batch(input_size, device, batch_size)] if reference else []
    height, width = input_size
    metas = [
        SampleMeta(name=f"summary{i}", image_set="summary", orig_size=(height, width))
        for i in range(batch_size)
    ]
    return Batch(
        images=torch.zeros((batch_size, 3, height, width), device=device),
        image_sizes=[(height, width)] * batch_size,
        metas=metas,
        labeled={},
        instances=[Instances.empty() for _ in range(batch_size)],
        lane_lines=[None] * batch_size,
        references=references,
    )


def reference_readers(model: MultiTaskNet) -> list[str]:
    """Paths of the stages that read the reference stream at inference (a flow head)."""
    return [
        s.path
        for s in model.stage_list
        if REFERENCE in s.needs
        and getattr(model.get_submodule(s.path), "reference_at_inference", False)
    ]


def model_device(model: torch.nn.Module) -> torch.device:
    """The device of the model's first parameter (cpu for a model without any)."""
    return next((p.device for p in model.parameters()), torch.device("cpu"))


def run_forward(
    model: MultiTaskNet,
    input_size: tuple[int, int],
    around: Callable[[Callable[[], Any], torch.Tensor], Any],
    on_meta: bool = True,
    batch_size: int = 1,
    training: bool = False,
    reference: bool = False,
) -> tuple[str, str]:
    """`around(run, images)` with `run()` one forward (heads without targets) on a blank batch:
    first on `meta` (when `on_meta`), else, when the model cannot run there, on its device.

    With `reference`, the blank batch carries blank reference frames (`blank_batch`).
    Returns (method, note): "meta" or the device name, and why `meta` did not work. The model
    runs in eval mode (train mode with `training`, its buffers swapped for copies); its mode is
    restored afterwards and its parameters and buffers are left as they were.
    """
    was_training = model.training
    model.train(training)
    note = ""
    try:
        if on_meta:
            twins = meta_twins(model)
            batch = blank_batch(input_size, "meta", batch_size, reference)
            try:
                around(lambda: meta_call(model, twins, batch, targets=False), batch.images)
                return "meta", ""
            except META_ERRORS as exc:
                note = f"a data-dependent step cannot run on meta ({type(exc).__name__})"
        device = model_device(model)
        batch = blank_batch(input_size, device, batch_size, reference)
        # in train mode, running statistics update: they go to copies, not to the model's own
        copies = {n: b.clone() for n, b in model.named_buffers()} if training else {}
        around(lambda: meta_call(model, copies, batch, targets=False), batch.images)
        return device.type, note
    finally:
        model.train(was_training)


def _params(model: torch.nn.Module, prefix: str) -> int:
    return sum(p.numel() for n, p in model.named_parameters() if n.startswith(prefix + "."))


def _module_macs(counts: dict[str, dict], base: str) -> int:
    """MACs of module `base` and everything below it, counted once.

    FlopCounterMode records a module only when its `forward` runs; a head whose decoder and
    predictor are called as methods appears through its sub-modules, whose outermost entries
    are summed (each entry already includes its own children).
    """
    if base in counts:
        return int(sum(counts[base].values())) // 2
    inside = [k for k in counts if k.startswith(base + ".")]
    outermost = [k for k in inside if not any(k != o and k.startswith(o + ".") for o in inside)]
    return int(sum(sum(counts[k].values()) for k in outermost)) // 2


def _under(key: str, bases: list[str]) -> bool:
    """Whether module name `key` is one of `bases` or inside one of them."""
    return any(key == b or key.startswith(b + ".") for b in bases)


CROSS_TASK_KINDS = ("interaction", "exchange")  # stages a single-task model does not have


def single_task_components(model: MultiTaskNet) -> dict[str, tuple[str, ...]]:
    """Each enabled task -> the stage paths a single-task model of it needs, in stage order.

    The backbone, the neck when a needed stage reads pixel features (or a reference frame's),
    and every stage that the heads of the task and of the tasks it requires (with the support
    heads they own) depend on, in the graph without the cross-task stages (interaction and
    exchange blocks), which a single-task model does not have.
    """
    graph = [s for s in model.stage_list if s.kind not in CROSS_TASK_KINDS]
    out = {}
    for task in model.task_names:
        members = with_required(model.tasks, [task])
        heads = [*members, *(n for n, owner in model.support_owner.items() if owner in members)]
        stages = order_stages(graph, [f"out:{h}" for h in heads])
        needed = {s.path for s in stages} | {"backbone"}
        streams = {stream for s in stages for stream in (*s.needs, *s.modifies)}
        if streams & {PIXEL, REFERENCE}:
            needed.add("neck")
        out[task] = tuple(dict.fromkeys(s.path for s in model.stage_list if s.path in needed))
    return out


@contextmanager
def _no_parameter_grads(model: nn.Module) -> Iterator[None]:
    """Parameters not requiring grad for the count: FlopCounterMode's module tracker fails on a
    view of a parameter that requires grad taken under no_grad (e.g. learned queries expanded
    over the batch), so the pass runs as on a frozen model; the flags are restored after."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    try:
        for p, _ in flags:
            p.requires_grad_(False)
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


def grid_boxes(size: tuple[int, int], count: int, like: torch.Tensor) -> torch.Tensor:
    """[count, 4] boxes (x1, y1, x2, y2) of a near-square grid tiling an image of `size` (H, W)."""
    height, width = size
    columns = max(1, math.isqrt(count - 1) + 1)  # ceil(sqrt(count))
    rows = -(-count // columns)
    index = torch.arange(count, device=like.device)
    col, row = (index % columns).to(like.dtype), (index // columns).to(like.dtype)
    cell_w, cell_h = width / columns, height / rows
    return torch.stack((col * cell_w, row * cell_h, (col + 1) * cell_w, (row + 1) * cell_h), 1)


def _fixed_detections(count: int) -> Callable[[nn.Module, tuple, Any], None]:
    """Forward hook of an object-stream provider: its inference detections become `count`
    grid boxes per image, classes cycling over the module's `num_classes`, scores 1."""

    def hook(module: nn.Module, args: tuple, output: Any) -> None:
        features = args[0] if args else None
        objects = getattr(features, "objects", None)
        if not isinstance(features, Features) or objects is None or objects.detections is None:
            return
        like = features.image
        boxes = [grid_boxes(size, count, like) for size in features.image_sizes]
        classes = torch.arange(count, device=like.device) % int(getattr(module, "num_classes", 1))
        features.objects = replace(
            objects,
            detections=boxes,
            det_classes=[classes.clone() for _ in boxes],
            det_scores=[like.new_ones(count) for _ in boxes],
            det_sources=_fixed_sources(objects, count),
        )

    return hook


def _fixed_sources(objects: Any, count: int) -> list[torch.Tensor] | None:
    """Source rows of the fixed detections among the box head's input boxes (the proposals;
    cycling over them), so heads reading object vectors index valid rows."""
    if objects.det_sources is None:
        return None
    return [torch.arange(count, device=p.device) % max(len(p), 1) for p in objects.proposals]


def _hook_provider(module: nn.Module, hook: Callable[[nn.Module, tuple, Any], None]) -> Any:
    """Run `hook` after an object-stream provider has made its detections: after `forward`,
    or, for a split head (the two-stage detector), after its `predict`. Returns a remover."""
    if not is_split_head(module):
        return module.register_forward_hook(hook)
    predict = module.predict

    def wrapped(task_features: Any, features: Any, batch: Any = None) -> Any:
        output = predict(task_features, features, batch)
        hook(module, (features,), output)
        return output

    module.predict = wrapped

    class _Remover:
        def remove(self) -> None:
            del module.predict

    return _Remover()


@contextmanager
def _detections_per_image(model: MultiTaskNet, count: int | None) -> Iterator[None]:
    """With `count`, every object-stream provider's detections fixed (`_fixed_detections`)."""
    if count is None:
        yield
        return
    if count < 1:
        raise ValueError(f"rois_per_image {count}: expected a positive number")
    paths = {s.path for s in model.stage_list if OBJECTS in s.provides and s.kind == "decoder"}
    handles = [_hook_provider(model.get_submodule(p), _fixed_detections(count)) for p in paths]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def summarize(
    model: MultiTaskNet,
    input_size: tuple[int, int] = (720, 1280),
    on_meta: bool = True,
    rois_per_image: int | None = None,
) -> ModelSummary:
    """Count parameters and MACs of every stage for one image of `input_size`.

    The pass runs on `meta` when the model allows it (`on_meta`), else on its device, in eval
    mode under no_grad. RoI heads are counted on the detections the current weights produce,
    or on `rois_per_image` grid boxes per image; heads that read a reference frame at
    inference on a second pass with one.
    """
    with _detections_per_image(model, rois_per_image):
        summary = _summarize(model, input_size, on_meta)
    return replace(summary, rois_per_image=rois_per_image)


def _summarize(model: MultiTaskNet, input_size: tuple[int, int], on_meta: bool) -> ModelSummary:
    """`summarize` with the detections as they are (see there)."""
    counters: list[FlopCounterMode] = []

    def around(run: Callable[[], Any], images: torch.Tensor) -> None:
        # a fresh counter per attempt: a pass that fails inside a module (meta cannot run a
        # data-dependent step) leaves that module on the counter's stack of parents, and a
        # reused counter would add every op of the next pass to it
        counters[:] = [FlopCounterMode(display=False)]
        with torch.no_grad(), _no_parameter_grads(model), counters[0]:
            run()

    method, _ = run_forward(model, input_size, around, on_meta)
    counts = {k: dict(v) for k, v in counters[0].get_flop_counts().items()}
    root = type(model).__name__
    readers = reference_readers(model)
    if readers:  # their MACs from a pass with a reference frame, the rest from the plain one
        run_forward(model, input_size, around, on_meta, reference=True)
        with_reference = counters[0].get_flop_counts()
        bases = [f"{root}.{p}" for p in readers]
        counts = {k: v for k, v in counts.items() if not _under(k, bases)}
        counts.update({k: dict(v) for k, v in with_reference.items() if _under(k, bases)})
    shared, heads, seen = [], [], set()
    for stage in model.stage_list:
        if stage.path in seen:
            continue
        seen.add(stage.path)
        cost = ComponentCost(
            stage.path, _params(model, stage.path), _module_macs(counts, f"{root}.{stage.path}")
        )
        (heads if stage.kind in ("decoder", "predictor") else shared).append(cost)
    return ModelSummary(input_size, shared, heads, single_task_components(model), method)


def model_memory(
    model: MultiTaskNet,
    input_size: tuple[int, int] = (512, 1024),
    batch_size: int = 1,
    on_meta: bool = True,
    training: bool = False,
    rois_per_image: int | None = None,
) -> MemoryProfile:
    """Peak activation memory of one inference pass at `input_size`, overall and per stage.

    Counted on `meta` (no compute, exact for the ops' outputs) when the model allows it, else
    by a real pass on the model's device. The input images count as live from the start. With
    `training`, the pass runs in train mode recording autograd, so the tensors saved for the
    backward pass count too (the gradients a backward pass then allocates do not). With
    `rois_per_image`, inference RoI heads run on that many detections (as in `summarize`).
    """
    paths = list(dict.fromkeys(s.path for s in model.stage_list))
    labels = stage_labels(model, paths)
    trackers, input_bytes = [], []

    def around(run: Callable[[], Any], images: torch.Tensor) -> None:
        input_bytes[:] = [images.numel() * images.element_size()]
        trackers[:] = [measure(run, (images,), labels, grad=training)]

    with _detections_per_image(model, rois_per_image):
        method, note = run_forward(model, input_size, around, on_meta, batch_size, training)
    tracker = trackers[0]
    stages = [
        StageMemory(p, tracker.label_peak[p], tracker.label_own[p])
        for p in paths
        if p in tracker.label_peak
    ]
    return MemoryProfile(input_size, batch_size, tracker.peak, input_bytes[0], stages, method, note)


def _mib(value: int) -> str:
    return f"{value / 2**20:.1f}"


def _gmacs(macs: int) -> str:
    """GMACs to 3 decimals; a stage that runs but rounds to 0 (a linear classifier) reads
    "<0.001", so that "0.000" means it computes nothing."""
    return "<0.001" if 0 < macs < 500_000 else f"{macs / 1e9:.3f}"


def format_summary(summary: ModelSummary, memory: MemoryProfile | None = None) -> str:
    """A plain-text table: component, parameters (M), GMACs, the unified / single-task ratio
    and, with `memory`, each stage's peak activation memory (all live / its own, MiB)."""
    h, w = summary.input_size
    header = f"{'component':<22}{'params (M)':>12}{'GMACs':>12}"
    rois = (
        ""
        if summary.rois_per_image is None
        else f"; RoI heads on {summary.rois_per_image} detections per image"
    )
    lines = [f"input {h}x{w} (MACs counted on {summary.method}{rois})"]
    peaks: dict[str, StageMemory] = {}
    if memory is not None:
        mh, mw = memory.input_size
        mode = "training forward" if memory.training else "inference"
        lines.append(
            f"peak activation memory ({mode}) at {mh}x{mw}, batch {memory.batch_size} "
            f"(counted on {memory.method}{'; ' + memory.note if memory.note else ''})"
        )
        header += f"{'peak MiB':>12}{'own MiB':>10}"
        peaks = {s.name: s for s in memory.stages}
    lines.append(header)
    for c in [*summary.shared, *summary.heads]:
        line = f"{c.name:<22}{c.params / 1e6:>12.3f}{_gmacs(c.macs):>12}"
        if c.name in peaks:
            line += f"{_mib(peaks[c.name].peak_bytes):>12}{_mib(peaks[c.name].own_bytes):>10}"
        lines.append(line)
    lines.append(
        f"{'shared stages':<22}{summary.shared_params / 1e6:>12.3f}"
        f"{summary.shared_macs / 1e9:>12.3f}"
    )
    lines.append(
        f"{'total (unified)':<22}{summary.total_params / 1e6:>12.3f}{summary.total_macs / 1e9:>12.3f}"
    )
    lines.append(
        f"{'sum of single-task':<22}{summary.single_task_params / 1e6:>12.3f}"
        f"{summary.single_task_macs / 1e9:>12.3f}"
    )
    if memory is not None:
        lines.append(f"{'peak (whole pass)':<46}{_mib(memory.peak_bytes):>12}")
    lines.append(f"unified / single-task MACs ratio: {summary.ratio():.3f}")
    return "\n".join(lines)
