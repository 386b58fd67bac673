"""`drivemtl.inference.bench`: statistics, run counts, the report's costs and backends' status.

Nothing here checks a time: the costs are compared with `summarize` / `model_memory` and hand
formulas, the timings only by their count and order.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tasks"))
from batches import tiny_config

from drivemtl.inference import bench as bench_module
from drivemtl.inference.bench import (
    BENCH_BACKENDS,
    BackendUnavailable,
    BenchError,
    BenchOptions,
    Timing,
    model_bytes,
    run_bench,
    time_runs,
)
from drivemtl.models import build_model
from drivemtl.models.config import ModelConfig
from drivemtl.models.summary import model_memory, summarize

SIZE = (64, 96)


def mteb_config(tasks: tuple[str, ...]) -> ModelConfig:
    """The tiny model of `tasks` with an mTEB (8 channels, downscale 2) between them."""
    cfg = tiny_config(tasks)
    exchange = {"type": "mteb", "tasks": list(tasks), "channels": 8, "downscale": 2}
    return ModelConfig.model_validate({**cfg.model_dump(), "exchanges": [exchange]})


def test_timing_statistics_by_hand() -> None:
    timing = Timing([5.0, 1.0, 4.0, 2.0, 3.0])
    assert timing.median == 3.0
    assert timing.p90 == 5.0  # nearest rank: ceil(0.9 * 5) = 5th of the sorted runs
    assert Timing([float(i) for i in range(1, 11)]).p90 == 9.0
    assert timing.summary() == {"median": 3.0, "p90": 5.0, "min": 1.0, "max": 5.0}


def test_time_runs_excludes_the_warm_up() -> None:
    calls = []
    timing = time_runs(lambda: calls.append(len(calls)), warmup=2, repeats=3, cuda=False)
    assert len(calls) == 5 and len(timing.seconds) == 3
    assert all(s >= 0 for s in timing.seconds)


def test_bad_options_are_refused_by_name() -> None:
    with pytest.raises(BenchError, match="--size"):
        BenchOptions(size=(0, 96)).check()
    with pytest.raises(BenchError, match="--batch 0"):
        BenchOptions(batch=0).check()
    with pytest.raises(BenchError, match="unknown backends \\['tensorrt'\\]"):
        BenchOptions(backends=("tensorrt",)).check()
    if not torch.cuda.is_available():
        with pytest.raises(BenchError, match="CUDA is not available"):
            BenchOptions(device="cuda").check()


@pytest.fixture
def broken_backend(monkeypatch):
    """Two backends for one test: one fails at its first call, one is not available."""

    def broken(model, example, config):
        def run(batch):
            raise RuntimeError("no kernel for this op\nsecond line")

        return run

    def absent(model, example, config):
        raise BackendUnavailable("not on this machine")

    monkeypatch.setitem(BENCH_BACKENDS._entries, "broken", broken)
    monkeypatch.setitem(BENCH_BACKENDS._entries, "absent", absent)


def test_report_costs_equal_the_summary_and_backends_report_status(
    broken_backend, tmp_path: Path
) -> None:
    torch.manual_seed(0)
    model = build_model(mteb_config(("semantic", "depth")))
    options = BenchOptions(
        size=SIZE, batch=2, warmup=1, repeats=2, backends=("eager", "broken", "absent")
    )
    report = run_bench(model, options)
    summary = summarize(model, SIZE)
    memory = model_memory(model, SIZE)
    assert [(s.name, s.params, s.macs) for s in report.stages] == [
        (c.name, c.params, c.macs) for c in [*summary.shared, *summary.heads]
    ]
    assert {s.name: (s.peak_bytes, s.own_bytes) for s in report.stages} == {
        m.name: (m.peak_bytes, m.own_bytes) for m in memory.stages
    }
    depth = report.single_task["depth"]
    assert depth["components"] == ["backbone", "neck", "heads.depth"]  # no exchange block
    assert depth["macs"] == sum(s.macs for s in report.stages if s.name in depth["components"])
    assert report.memory_method == "meta"
    assert report.ratio == pytest.approx(
        report.total_macs / sum(t["macs"] for t in report.single_task.values())
    )
    eager, broken, absent = report.backends
    assert eager.status == "ok" and len(eager.latency.seconds) == 2
    assert len(eager.throughput.seconds) == 3 and eager.batch == 2  # at least 3 batch runs
    batch_memory = model_memory(model, SIZE, batch_size=2).peak_bytes
    assert eager.peak_memory_bytes == model_bytes(model) + batch_memory
    assert broken.status == "not available: RuntimeError: no kernel for this op"
    assert absent.status == "not available: not on this machine"
    assert broken.latency is None and broken.peak_memory_bytes is None

    data = json.loads(report.write(tmp_path / "run").read_text())
    assert data["options"]["size"] == list(SIZE) and data["total_macs"] == summary.total_macs
    assert data["backends"][0]["latency_s"]["runs"] == eager.latency.seconds
    assert data["backends"][0]["throughput_images_per_s"]["median"] == pytest.approx(
        2 / eager.throughput.median
    )
    assert data["backends"][1]["status"].startswith("not available")


def test_onnxruntime_uses_the_export_hook_and_needs_the_config(monkeypatch) -> None:
    import drivemtl.export as export
    from drivemtl.models.summary import blank_batch

    example = blank_batch(SIZE)
    with pytest.raises(BackendUnavailable, match="needs the run config"):
        bench_module.onnxruntime_backend(torch.nn.Identity(), example, None)
    seen = []
    monkeypatch.setattr(
        export, "bench_runner", lambda *args: seen.append(args) or len, raising=False
    )
    assert bench_module.onnxruntime_backend("model", example, "config") is len
    assert seen == [("model", example, "config")]


def test_compile_failure_is_reported(monkeypatch) -> None:
    def refuse(model):
        raise RuntimeError("inductor needs a C++ compiler")

    monkeypatch.setattr(torch, "compile", refuse)
    torch.manual_seed(0)
    model = build_model(tiny_config(("semantic",)))
    options = BenchOptions(size=SIZE, batch=1, warmup=0, repeats=1, backends=("compile",))
    result = bench_module.run_backend("compile", model.eval(), options, None)
    assert result.latency is None
    assert result.status == "not available: RuntimeError: inductor needs a C++ compiler"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_path_bf16_channels_last_events() -> None:
    torch.manual_seed(0)
    model = build_model(tiny_config(("semantic", "depth")))
    options = BenchOptions(
        size=SIZE, batch=2, warmup=1, repeats=3, backends=("eager",), device="cuda"
    )
    report = run_bench(model, options)
    (eager,) = report.backends
    assert eager.status == "ok" and len(eager.latency.seconds) == 3
    assert eager.peak_memory_bytes >= model_bytes(model)
    assert eager.memory_method.startswith("cuda max_memory_allocated")
    assert report.environment["precision"] == "bf16 autocast, channels-last"


def test_frames_are_padded_like_collate_pads_them() -> None:
    options = BenchOptions(size=(720, 1270), size_divisor=32)
    assert options.padded_size == (736, 1280)
    batch = bench_module.bench_batch(options, 2)
    assert batch.images.shape == (2, 3, 736, 1280) and batch.image_sizes == [(720, 1270)] * 2
    assert (
        batch.images[:, :, 720:].abs().sum() == 0 and batch.images[:, :, :, 1270:].abs().sum() == 0
    )
    assert batch.images[:, :, :720, :1270].std() > 0.5  # the noise frame itself
