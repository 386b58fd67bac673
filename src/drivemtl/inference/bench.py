"""`drivemtl bench`: latency, throughput, peak memory and per-stage costs of a multi-task network.

Per backend (a plug-in of `BENCH_BACKENDS`: `eager`, `compile` = `torch.compile`, `onnxruntime`
= the `drivemtl.export` ONNX graphs and runtime, CPU provider), the timed unit is one inference
pass to every task's raw outputs, the detector's proposals and NMS included (each task's
post-processing into predictions is not timed; it is the same for every backend). Latency is
measured at batch 1 (median and p90 of `repeats` warm runs, after `warmup` untimed ones) and
throughput at `batch` (images per second, median of the runs). On CUDA the model runs in bf16
autocast and channels-last and each run is timed with CUDA events after a synchronisation; on
CPU in float32 with `time.perf_counter`.

Peak memory: on CUDA the allocator's `max_memory_allocated` over the throughput runs (batch
`batch`); on CPU, for the eager backend, the parameters and buffers plus the peak of live
activations of one pass at batch `batch` (`drivemtl.models.summary.model_memory`, counted on
`meta` where the model allows it). Parameters, MACs and each stage's peak activation memory
(batch 1) come from `drivemtl.models.summary`, as does the unified / single-task MACs ratio.

A backend that cannot run (no compiler, an op it does not support, no export module) is
reported as "not available: <reason>", not as an error.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import math
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from drivemtl.errors import DriveMTLError
from drivemtl.models.memory import MemoryProfile
from drivemtl.models.multitask import MultiTaskNet
from drivemtl.models.summary import ModelSummary, blank_batch, model_memory, summarize
from drivemtl.registry import Registry
from drivemtl.structures.batch import Batch

if TYPE_CHECKING:
    from drivemtl.engine.run_config import RunConfig

Runner = Callable[[Batch], Any]
# A backend: (model, example batch, run config or None) -> runner(batch); it raises
# BackendUnavailable(reason) when it cannot run here.
BENCH_BACKENDS: Registry[Callable[[nn.Module, Batch, Any], Runner]] = Registry("bench backend")
DEFAULT_BACKENDS = ("eager", "compile", "onnxruntime")


class BenchError(DriveMTLError):
    """Bad bench options (sizes, counts, an unknown backend or device)."""


class BackendUnavailable(Exception):
    """A backend cannot run here; the message is the reason shown in the table."""


@dataclass(frozen=True)
class BenchOptions:
    """What to measure: input size (H, W), throughput batch, run counts, backends, device.

    Frames are zero-padded to a multiple of `size_divisor` (the data config's), as `collate`
    pads them for `predict`: the network sees `padded_size`.
    """

    size: tuple[int, int] = (720, 1280)
    batch: int = 4
    warmup: int = 2
    repeats: int = 10
    backends: tuple[str, ...] = DEFAULT_BACKENDS
    device: str = "cpu"
    size_divisor: int = 32

    @property
    def padded_size(self) -> tuple[int, int]:
        """`size` padded up to a multiple of `size_divisor`, as `collate` pads frames."""
        d = max(self.size_divisor, 1)
        return (math.ceil(self.size[0] / d) * d, math.ceil(self.size[1] / d) * d)

    def check(self) -> None:
        """Raise BenchError naming the first option out of range."""
        if min(self.size) <= 0:
            raise BenchError(f"--size {self.size[0]}x{self.size[1]}: both sides must be positive")
        if self.batch < 1 or self.repeats < 1 or self.warmup < 0 or self.size_divisor < 1:
            raise BenchError(
                f"--batch {self.batch}, --repeats {self.repeats}, --warmup {self.warmup}, "
                f"size divisor {self.size_divisor}: expected batch >= 1, repeats >= 1, "
                "warmup >= 0, divisor >= 1"
            )
        unknown = [b for b in self.backends if b not in BENCH_BACKENDS]
        if unknown:
            raise BenchError(f"unknown backends {unknown}; known: {BENCH_BACKENDS.names()}")
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise BenchError(f"--device {self.device}: CUDA is not available on this machine")

    @property
    def cuda(self) -> bool:
        """Whether the bench runs on a CUDA device (bf16 autocast, channels-last, CUDA events)."""
        return self.device.startswith("cuda")


@dataclass(frozen=True)
class Timing:
    """Seconds of each timed run, with their median, 90th percentile and range."""

    seconds: list[float]

    @property
    def median(self) -> float:
        """Median seconds per run."""
        return statistics.median(self.seconds)

    @property
    def p90(self) -> float:
        """90th percentile (nearest rank) of the seconds per run."""
        ordered = sorted(self.seconds)
        return ordered[max(0, math.ceil(0.9 * len(ordered)) - 1)]

    def summary(self) -> dict[str, float]:
        """Median, p90, min and max in seconds."""
        s = self.seconds
        return {"median": self.median, "p90": self.p90, "min": min(s), "max": max(s)}


@dataclass
class BackendResult:
    """One backend's figures, or `status` = "not available: <reason>"."""

    name: str
    status: str = "ok"
    latency: Timing | None = None
    throughput: Timing | None = None  # seconds per batch of `batch` images
    batch: int = 1
    peak_memory_bytes: int | None = None
    memory_method: str = ""

    @property
    def images_per_second(self) -> float | None:
        """Median throughput in images per second."""
        return None if self.throughput is None else self.batch / self.throughput.median

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (seconds, images per second, bytes)."""
        out: dict[str, Any] = {"name": self.name, "status": self.status, "batch": self.batch}
        if self.latency is not None:
            out["latency_s"] = {**self.latency.summary(), "runs": self.latency.seconds}
        if self.throughput is not None:
            t = self.throughput
            out["throughput_images_per_s"] = {
                "median": self.batch / t.median,
                "min": self.batch / max(t.seconds),
                "max": self.batch / min(t.seconds),
                "runs_s": t.seconds,
            }
        out["peak_memory_bytes"] = self.peak_memory_bytes
        out["memory_method"] = self.memory_method
        return out


@dataclass(frozen=True)
class StageRow:
    """Costs of one stage: parameters, MACs at the bench size, peak activation bytes."""

    name: str
    kind: str
    params: int
    macs: int
    peak_bytes: int | None
    own_bytes: int | None


@dataclass
class BenchReport:
    """Everything `drivemtl bench` measured, with the environment it ran in."""

    options: BenchOptions
    stages: list[StageRow]
    single_task: dict[str, dict[str, Any]]
    total_params: int
    total_macs: int
    single_task_macs: int
    ratio: float
    activation_peak_bytes: int
    memory_method: str
    backends: list[BackendResult] = field(default_factory=list)
    environment: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The report as JSON-ready data (`bench.json`)."""
        opts = asdict(self.options)
        opts["size"], opts["backends"] = list(self.options.size), list(self.options.backends)
        opts["padded_size"] = list(self.options.padded_size)
        return {
            "options": opts,
            "environment": self.environment,
            "stages": [asdict(s) for s in self.stages],
            "single_task": self.single_task,
            "total_params": self.total_params,
            "total_macs": self.total_macs,
            "single_task_macs": self.single_task_macs,
            "unified_over_single_task_macs": self.ratio,
            "activation_peak_bytes": self.activation_peak_bytes,
            "memory_method": self.memory_method,
            "backends": [b.to_json() for b in self.backends],
        }

    def write(self, out_dir: Path) -> Path:
        """Write `bench.json` into `out_dir` (created) and return its path."""
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / "bench.json"
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.to_json(), indent=2) + "\n", encoding="utf-8")
        tmp.replace(path)
        return path


def stage_rows(model: MultiTaskNet, summary: ModelSummary, memory: MemoryProfile) -> list[StageRow]:
    """One row per stage (in graph order): parameters, MACs and peak activation memory."""
    peaks = {s.name: s for s in memory.stages}
    kinds: dict[str, str] = {}
    for stage in model.stage_list:
        kinds.setdefault(
            stage.path, "head" if stage.kind in ("decoder", "predictor") else stage.kind
        )
    rows = []
    for cost in [*summary.shared, *summary.heads]:
        peak = peaks.get(cost.name)
        rows.append(
            StageRow(cost.name, kinds.get(cost.name, ""), cost.params, cost.macs,
                     peak.peak_bytes if peak else None, peak.own_bytes if peak else None)
        )  # fmt: skip
    return rows


def cost_report(model: MultiTaskNet, options: BenchOptions) -> BenchReport:
    """Parameters, MACs, single-task costs and peak activation memory at the padded size."""
    summary = summarize(model, options.padded_size)
    memory = model_memory(model, options.padded_size)
    single = {
        task: {
            "components": list(parts),
            "params": summary.task_params(task),
            "macs": summary.task_macs(task),
        }
        for task, parts in summary.single_task.items()
    }
    return BenchReport(
        options=options,
        stages=stage_rows(model, summary, memory),
        single_task=single,
        total_params=summary.total_params,
        total_macs=summary.total_macs,
        single_task_macs=summary.single_task_macs,
        ratio=summary.ratio(),
        activation_peak_bytes=memory.peak_bytes,
        memory_method=memory.method,
    )


def bench_batch(options: BenchOptions, batch_size: int) -> Batch:
    """`batch_size` frames of seeded noise at `options.size`, zero-padded to the padded size
    as `collate` does (channels-last on CUDA)."""
    height, width = options.size
    batch = blank_batch(options.padded_size, options.device, batch_size)
    batch.image_sizes = [(height, width)] * batch_size
    g = torch.Generator().manual_seed(0)
    images = torch.zeros(batch.images.shape)
    images[:, :, :height, :width] = torch.randn((batch_size, 3, height, width), generator=g)
    images = images.to(options.device)
    if options.cuda:
        images = images.contiguous(memory_format=torch.channels_last)
    batch.images = images
    return batch


@contextlib.contextmanager
def precision(cuda: bool) -> Iterator[None]:
    """bf16 autocast on CUDA, nothing on CPU; always inference mode."""
    with torch.inference_mode():
        if cuda:
            with torch.autocast("cuda", dtype=torch.bfloat16):
                yield
        else:
            yield


def time_runs(fn: Callable[[], Any], warmup: int, repeats: int, cuda: bool) -> Timing:
    """`warmup` untimed calls, then `repeats` timed ones (CUDA events after a sync on CUDA)."""
    for _ in range(warmup):
        fn()
    seconds = []
    for _ in range(repeats):
        if cuda:
            torch.cuda.synchronize()
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            seconds.append(start.elapsed_time(end) / 1000.0)
        else:
            begin = time.perf_counter()
            fn()
            seconds.append(time.perf_counter() - begin)
    return Timing(seconds)


def model_bytes(model: nn.Module) -> int:
    """Bytes of the model's parameters and buffers."""
    tensors = [*model.parameters(), *model.buffers()]
    return sum(t.numel() * t.element_size() for t in tensors)


def run_backend(
    name: str,
    model: MultiTaskNet,
    options: BenchOptions,
    cpu_activations: int | None,
    config: RunConfig | None = None,
) -> BackendResult:
    """Time one backend (latency at batch 1, throughput at `options.batch`) and its memory."""
    result = BackendResult(name, batch=options.batch)
    one, many = bench_batch(options, 1), bench_batch(options, options.batch)
    try:
        with precision(options.cuda):
            run = BENCH_BACKENDS.get(name)(model, one, config)
            run(one)  # the first call (compilation, session creation) is never timed
    except BackendUnavailable as exc:
        result.status = f"not available: {exc}"
        return result
    except Exception as exc:  # any failure of an optional backend is reported, not raised
        result.status = f"not available: {type(exc).__name__}: {_first_line(exc)}"
        return result
    with precision(options.cuda):
        result.latency = time_runs(lambda: run(one), options.warmup, options.repeats, options.cuda)
        if options.cuda:
            torch.cuda.reset_peak_memory_stats(options.device)
        # one untimed call at the new batch size first (torch.compile recompiles for it)
        result.throughput = time_runs(
            lambda: run(many), 1, max(3, options.repeats // 2), options.cuda
        )
    if options.cuda:
        result.peak_memory_bytes = int(torch.cuda.max_memory_allocated(options.device))
        result.memory_method = f"cuda max_memory_allocated, batch {options.batch}"
    elif cpu_activations is not None and name == "eager":
        result.peak_memory_bytes = model_bytes(model) + cpu_activations
        result.memory_method = f"parameters + live activations, batch {options.batch}"
    else:
        result.memory_method = "not measured on CPU for this backend"
    return result


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:160] if text else "(no message)"


def prepare_model(model: MultiTaskNet, options: BenchOptions) -> MultiTaskNet:
    """The model in eval mode on the bench device (channels-last on CUDA)."""
    model = model.eval().to(options.device)
    if options.cuda:
        model = model.to(memory_format=torch.channels_last)
    return model


def run_bench(
    model: MultiTaskNet, options: BenchOptions, config: RunConfig | None = None
) -> BenchReport:
    """Costs per stage, then every backend's latency, throughput and peak memory (`config`,
    the run config the model was built from, is what the ONNX export needs)."""
    options.check()
    model = prepare_model(model, options)
    report = cost_report(model, options)
    cpu_activations = None
    if not options.cuda:
        cpu_activations = model_memory(model, options.padded_size, options.batch).peak_bytes
    for name in options.backends:
        report.backends.append(run_backend(name, model, options, cpu_activations, config))
    report.environment = environment(options)
    return report


def environment(options: BenchOptions) -> dict[str, Any]:
    """Torch version, threads, device name and numeric setting of the run."""
    device = torch.cuda.get_device_name(options.device) if options.cuda else "cpu"
    return {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "device": device,
        "precision": "bf16 autocast, channels-last" if options.cuda else "float32",
    }


@BENCH_BACKENDS.register("eager")
def eager_backend(model: nn.Module, example: Batch, config: RunConfig | None) -> Runner:
    """PyTorch eager: the model's forward to raw outputs."""
    return lambda batch: model(batch, targets=False)


@BENCH_BACKENDS.register("compile")
def compile_backend(model: nn.Module, example: Batch, config: RunConfig | None) -> Runner:
    """`torch.compile` of the model (default mode); compiled at the first, untimed call."""
    if not hasattr(torch, "compile"):
        raise BackendUnavailable("torch.compile is missing from this torch")
    compiled = torch.compile(model)
    return lambda batch: compiled(batch, targets=False)


@BENCH_BACKENDS.register("onnxruntime")
def onnxruntime_backend(model: nn.Module, example: Batch, config: RunConfig | None) -> Runner:
    """onnxruntime (CPU provider) on the model exported by `drivemtl.export`.

    The hook: a `drivemtl.export.bench_runner(model, example, config) -> runner` is used when
    the export module provides one; otherwise the model is exported with `export_onnx` into a
    temporary folder and run by the export runtime (`ExportedRuntime` over `OnnxGraphs`: the
    graphs plus the data-dependent steps between them, the same unit as the eager forward).
    """
    try:
        export = importlib.import_module("drivemtl.export")
    except ImportError:
        raise BackendUnavailable("export not installed") from None
    runner = getattr(export, "bench_runner", None)
    if runner is not None:
        return runner(model, example, config)
    try:
        from drivemtl.export.exporter import export_onnx
        from drivemtl.export.runtime import ExportedRuntime, OnnxGraphs
    except ImportError as exc:
        raise BackendUnavailable(f"export not installed ({exc})") from None
    if example.images.device.type != "cpu":
        raise BackendUnavailable("the export runtime runs onnxruntime's CPU provider only")
    if config is None:
        raise BackendUnavailable("the ONNX export needs the run config")
    with tempfile.TemporaryDirectory(prefix="drivemtl-bench-") as folder:
        card = json.loads(export_onnx(model, config, Path(folder)).read_text(encoding="utf-8"))
        files = {name: entry["file"] for name, entry in card["graphs"].items()}
        graphs = OnnxGraphs(Path(folder), files, torch.get_num_threads())
    runtime = ExportedRuntime(model, graphs)
    return lambda batch: runtime.raw_outputs(batch)


__all__ = [
    "BENCH_BACKENDS",
    "BackendResult",
    "BackendUnavailable",
    "BenchError",
    "BenchOptions",
    "BenchReport",
    "StageRow",
    "Timing",
    "cost_report",
    "run_bench",
    "time_runs",
]
