"""`drivemtl eval`: score a trained model on the evaluation split (registered by `cli.main`)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from drivemtl.cli.errors import UsageError
from drivemtl.cli.options import set_option

if TYPE_CHECKING:
    from drivemtl.evaluation.model_eval import EvalResult

SetOption = set_option("data.transforms.test_height=360")


def eval_model(
    config: Annotated[Path, typer.Argument(help="Run config YAML (model and data).")],
    checkpoint: Annotated[Path, typer.Option("--checkpoint", help="Weights (.safetensors).")],
    sets: Annotated[
        list[str] | None, typer.Option("--sets", help="Image sets to evaluate (repeatable).")
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="Folder for metrics.json and metrics.md.")
    ] = None,
    overrides: SetOption = None,
    split: Annotated[str, typer.Option("--split", help="Data split to read.")] = "val",
    batch_size: Annotated[int, typer.Option("--batch-size", help="Images per forward.")] = 4,
    device: Annotated[
        str | None, typer.Option("--device", help="cpu, cuda, cuda:1 (default: cuda if any).")
    ] = None,
    workers: Annotated[int, typer.Option("--workers", help="Data loading processes.")] = 0,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
    baselines: Annotated[
        list[Path] | None,
        typer.Option(
            "--baseline",
            help="Single-task results for Δ_T: a metrics.json of `drivemtl eval`, or a folder "
            "searched for them (repeatable; a later file wins a key).",
        ),
    ] = None,
    delta_metrics: Annotated[
        list[str] | None,
        typer.Option(
            "--metric",
            help="task/metric key Δ_T averages (repeatable; default: each task's headline "
            "metric that the run and the baselines both report).",
        ),
    ] = None,
) -> None:
    """Run the model of CONFIG with CHECKPOINT's weights and print every task's metrics (with
    Δ_T against single-task runs when --baseline is given)."""
    from drivemtl.engine.run_config import load_run_config
    from drivemtl.evaluation.model_eval import ModelEvalError, evaluate_model, frames_line

    if batch_size < 1:
        raise UsageError(f"--batch-size {batch_size}: expected a positive number")
    if delta_metrics and not baselines:
        raise UsageError("--metric needs --baseline (the single-task results Δ_T compares with)")
    if baselines:
        _check_baselines(baselines, delta_metrics or [])  # before the model runs
    cfg = load_run_config(config, overrides or [])
    try:
        result = evaluate_model(
            cfg, checkpoint, sets or None, out, batch_size, progress,
            split=split, device=device, num_workers=workers,
        )  # fmt: skip
    except ModelEvalError as exc:
        raise UsageError(str(exc)) from None
    if baselines:
        _add_delta(result, baselines, delta_metrics or None, out)
    typer.echo(frames_line(result.frames, result.skipped))
    typer.echo(result.table)
    if result.resources_text:
        typer.echo(result.resources_text)
    if "delta" in result.metrics:
        keys = [k.removeprefix("gain/") for k in result.metrics["delta"] if k.startswith("gain/")]
        typer.echo(f"Δ_T {result.metrics['delta']['Delta_T']:+.2f} % over {', '.join(keys)}")
    if result.json_path is not None:
        typer.echo(f"metrics: {result.json_path}")


def _check_baselines(baselines: list[Path], keys: list[str]) -> None:
    """The baseline files exist, parse, and hold every key asked for."""
    from drivemtl.evaluation.delta import baseline_files, load_results

    try:
        found: set[str] = set()
        for path in baseline_files(baselines):
            found.update(load_results(path))
    except (FileNotFoundError, ValueError) as exc:
        raise UsageError(f"Δ_T: {exc}") from None
    missing = [k for k in keys if k not in found]
    if missing:
        raise UsageError(f"Δ_T: single-task results lack metric(s) {missing}")


def _add_delta(result: EvalResult, baselines: list[Path], keys: list[str] | None,
               out: Path | None) -> None:  # fmt: skip
    """Add the `delta` row (Δ_T, per-key gains) and rewrite the report files with it."""
    from drivemtl.evaluation.delta import delta_against
    from drivemtl.evaluation.report import flatten, write_report

    try:
        report = delta_against(flatten(result.metrics), baselines, keys)
    except (FileNotFoundError, KeyError, ValueError) as exc:
        message = exc.args[0] if isinstance(exc, KeyError) else str(exc)
        raise UsageError(f"Δ_T: {message}") from None
    result.metrics["delta"] = report.as_dict()
    if out is not None:
        result.json_path, result.markdown_path = write_report(
            result.metrics, out, footer=result.resources_text
        )
