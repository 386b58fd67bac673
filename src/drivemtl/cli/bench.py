"""`drivemtl bench`: latency, throughput, memory and per-stage costs (registered by `cli.main`)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from drivemtl.cli.errors import UsageError

if TYPE_CHECKING:
    from rich.table import Table

    from drivemtl.inference.bench import BenchReport


def parse_size(text: str, flag: str = "--size") -> tuple[int, int]:
    """`HxW` (e.g. 720x1280) as (H, W); UsageError naming `flag` otherwise."""
    parts = text.lower().replace(" ", "").split("x")
    if len(parts) != 2 or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise UsageError(
            f"{flag} {text!r}: expected HEIGHTxWIDTH with positive integers, e.g. 720x1280"
        )
    return int(parts[0]), int(parts[1])


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.1f}"


def _mib(value: int | None) -> str:
    return "-" if value is None else f"{value / 2**20:.1f}"


def stage_table(report: BenchReport) -> Table:
    """Parameters, GMACs and peak activation memory (all live / own) per stage, then totals."""
    from rich.table import Table

    (h, w), (ph, pw) = report.options.size, report.options.padded_size
    padded = f" padded to {ph}x{pw}" if (ph, pw) != (h, w) else ""
    table = Table(
        title=f"cost per stage, {h}x{w}{padded}, batch 1 (memory counted on {report.memory_method})"
    )
    for column in ("stage", "params M", "GMACs", "peak MiB", "own MiB"):
        table.add_column(column, justify="left" if column == "stage" else "right")
    for s in report.stages:
        table.add_row(s.name, f"{s.params / 1e6:.2f}", f"{s.macs / 1e9:.2f}",
                      _mib(s.peak_bytes), _mib(s.own_bytes))  # fmt: skip
    table.add_section()
    table.add_row("unified", f"{report.total_params / 1e6:.2f}", f"{report.total_macs / 1e9:.2f}",
                  _mib(report.activation_peak_bytes), "")  # fmt: skip
    return table


def single_task_table(report: BenchReport) -> Table:
    """GMACs of each single-task model with what it needs beyond backbone + neck, and the ratio."""
    from rich.table import Table

    table = Table(title="single-task models (backbone + neck + ...)")
    for column in ("task", "GMACs", "needs"):
        table.add_column(column, justify="right" if column == "GMACs" else "left")
    for task, single in report.single_task.items():
        needs = [c for c in single["components"] if c not in ("backbone", "neck")]
        table.add_row(task, f"{single['macs'] / 1e9:.2f}", " + ".join(needs))
    table.add_section()
    table.add_row("sum", f"{report.single_task_macs / 1e9:.2f}", "")
    table.caption = f"unified / single-task MACs ratio: {report.ratio:.3f}"
    return table


def backend_table(report: BenchReport) -> Table:
    """Latency (median, p90, range), throughput (median, range) and peak memory per backend;
    a backend that did not run is a caption line with its reason."""
    from rich.table import Table

    opts = report.options
    env = report.environment
    table = Table(
        title=f"speed on {env.get('device', opts.device)}, {env.get('precision', '')}, "
        f"{env.get('threads', '?')} threads ({opts.repeats} timed runs after {opts.warmup} warm-up)"
    )
    for column in ("backend", "ms median", "p90", "range", f"img/s b{opts.batch}", "range", "MiB"):
        table.add_column(column, justify="left" if column == "backend" else "right")
    missing = []
    for b in report.backends:
        if b.latency is None or b.throughput is None:
            missing.append(f"{b.name}: {b.status}")
            continue
        lat, thr = b.latency, b.throughput
        table.add_row(
            b.name, _ms(lat.median), _ms(lat.p90),
            f"{_ms(min(lat.seconds))}-{_ms(max(lat.seconds))}",
            f"{b.images_per_second:.2f}",
            f"{b.batch / max(thr.seconds):.2f}-{b.batch / min(thr.seconds):.2f}",
            _mib(b.peak_memory_bytes),
        )  # fmt: skip
    table.caption = "\n".join(missing) or None
    return table


def print_report(report: BenchReport) -> None:
    """The three tables on the terminal."""
    from rich.console import Console

    console = Console()
    for table in (stage_table(report), single_task_table(report), backend_table(report)):
        console.print(table)


def bench(
    config: Annotated[Path, typer.Argument(help="YAML config file (with a `model:` section).")],
    checkpoint: Annotated[
        Path | None,
        typer.Option("--checkpoint", help="Weights (.safetensors); default: random init."),
    ] = None,
    size: Annotated[str, typer.Option("--size", help="Input HEIGHTxWIDTH.")] = "720x1280",
    batch: Annotated[int, typer.Option("--batch", help="Batch size of the throughput runs.")] = 4,
    repeats: Annotated[int, typer.Option("--repeats", help="Timed runs per measurement.")] = 10,
    warmup: Annotated[int, typer.Option("--warmup", help="Untimed runs before timing.")] = 2,
    backends: Annotated[
        list[str] | None,
        typer.Option("--backend", help="eager, compile, onnxruntime (repeatable; default: all)."),
    ] = None,
    device: Annotated[str, typer.Option("--device", help="cpu, cuda, cuda:1.")] = "cpu",
    out: Annotated[
        Path | None, typer.Option("--out", help="Folder for bench.json (default: output_dir/name).")
    ] = None,
    overrides: Annotated[
        list[str] | None,
        typer.Option("--set", help="Override a config value: --set model.backbone.width=32."),
    ] = None,
) -> None:
    """Latency, throughput, peak memory, parameters and MACs per stage of CONFIG's network."""
    import torch

    from drivemtl.engine.run_config import load_run_config
    from drivemtl.inference.bench import DEFAULT_BACKENDS, BenchOptions, run_bench
    from drivemtl.outputs import check_output_dir

    requested = parse_size(size)
    cfg = load_run_config(config, overrides or [])
    options = BenchOptions(
        size=requested, batch=batch, warmup=warmup, repeats=repeats,
        backends=tuple(backends or DEFAULT_BACKENDS), device=device,
        size_divisor=cfg.data.size_divisor if cfg.data is not None else 32,
    )  # fmt: skip
    options.check()
    out_dir = check_output_dir(out if out is not None else Path(cfg.output_dir) / cfg.name)
    if checkpoint is not None:
        from drivemtl.inference.predictor import load_model

        model = load_model(cfg, checkpoint)
    else:
        from drivemtl.models import build_model

        torch.manual_seed(cfg.seed)
        try:
            model = build_model(cfg.model)
        except (KeyError, ValueError) as exc:
            raise UsageError(f"{config}: cannot build the model: {exc}") from None
    report = run_bench(model, options, cfg)
    print_report(report)
    typer.echo(f"bench: {report.write(out_dir)}")
