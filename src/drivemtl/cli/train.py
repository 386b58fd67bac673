"""`drivemtl train` and `drivemtl pseudo-label` (registered by `drivemtl.cli.main`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from drivemtl.cli.errors import UsageError
from drivemtl.cli.options import set_option

SetOption = set_option("recipe.stages.0.steps=10")


def train(
    config: Annotated[Path, typer.Argument(help="Run config YAML (model, data, recipe).")],
    overrides: SetOption = None,
    out: Annotated[Path | None, typer.Option("--out", help="Run directory.")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run in --out.")] = False,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Write into a non-empty --out that holds no run.")
    ] = False,
    devices: Annotated[int | None, typer.Option("--devices", help="Devices per node.")] = None,
    precision: Annotated[
        str | None, typer.Option("--precision", help="32-true, bf16-mixed or 16-mixed.")
    ] = None,
    progress: Annotated[bool, typer.Option(help="Show the rich progress bar.")] = True,
    eval_split: Annotated[
        str | None,
        typer.Option(
            "--eval-split",
            help="After training, evaluate the final weights on this split (e.g. val) and write "
            "metrics.json / metrics.md into RUN/eval. Use a split the training data does not hold.",
        ),
    ] = None,
) -> None:
    """Train the recipe of CONFIG stage by stage into a run directory."""
    from drivemtl.engine.run_config import load_run_config
    from drivemtl.engine.trainer import run_recipe

    if precision is not None and precision not in ("32-true", "bf16-mixed", "16-mixed"):
        raise UsageError(f"--precision {precision}: expected 32-true, bf16-mixed or 16-mixed")
    if devices is not None and devices < 1:
        raise UsageError(f"--devices {devices}: expected a positive number")
    cfg = load_run_config(config, overrides or [])
    if resume and out is None:
        raise UsageError("--resume needs --out DIR (the run directory to continue)")
    result = run_recipe(
        cfg, out, resume=resume, devices=devices, precision=precision, progress=progress,
        overwrite=overwrite,
    )  # fmt: skip
    typer.echo(f"final weights: {result.final_weights}")
    if eval_split is not None:
        from drivemtl.evaluation.model_eval import evaluate_model

        evaluation = evaluate_model(
            cfg, result.final_weights, out_dir=result.out_dir / "eval", split=eval_split,
            progress=progress,
        )  # fmt: skip
        typer.echo(evaluation.table)
        typer.echo(f"metrics: {result.out_dir / 'eval' / 'metrics.json'}")


def pseudo_label(
    config: Annotated[Path, typer.Argument(help="Run config YAML of the teacher model and data.")],
    checkpoint: Annotated[Path, typer.Option("--checkpoint", help="Teacher .safetensors.")],
    sets: Annotated[list[str], typer.Option("--sets", help="Image sets to label (repeatable).")],
    tasks: Annotated[list[str], typer.Option("--tasks", help="Tasks to label (repeatable).")],
    out: Annotated[Path, typer.Option("--out", help="Output directory.")],
    overrides: SetOption = None,
    batch_size: Annotated[int, typer.Option(help="Images per forward pass.")] = 4,
    box_score: Annotated[float, typer.Option(help="Keep boxes with score >= this.")] = 0.5,
    semantic_confidence: Annotated[
        float, typer.Option(help="Semantic pixels with confidence below this become ignore.")
    ] = 0.3,
    joint_score: Annotated[float, typer.Option(help="Drop pose joints below this.")] = 0.2,
    drivable_confidence: Annotated[
        float, typer.Option(help="Drivable pixels with confidence below this become ignore.")
    ] = 0.3,
) -> None:
    """Run a teacher over images lacking TASKS' labels and write pseudo labels (canonical format).

    Stages read them with `pseudo_labels: [{path: OUT}]`; a pseudo_label stage labels in-run.
    """
    from drivemtl.engine.pseudo_label import PseudoLabelRules, write_pseudo_labels
    from drivemtl.engine.run_config import load_run_config

    cfg = load_run_config(config, overrides or [])
    rules = PseudoLabelRules(
        box_score=box_score,
        semantic_confidence=semantic_confidence,
        joint_score=joint_score,
        drivable_confidence=drivable_confidence,
    )
    card = write_pseudo_labels(cfg, checkpoint, sets, tasks, out, rules, batch_size=batch_size)
    typer.echo(f"pseudo labels: {card}")


def grid_search(
    config: Annotated[Path, typer.Argument(help="Run config YAML of the multi-task baseline.")],
    weights: Annotated[
        list[str], typer.Option("--weights", help="A grid axis TASK=W1,W2,... (repeatable).")
    ],
    baselines: Annotated[
        list[Path],
        typer.Option("--baseline", help="metrics.json of a single-task run (repeatable)."),
    ],
    metrics: Annotated[
        list[str], typer.Option("--metric", help="task/metric key Δ_T averages (repeatable).")
    ],
    out: Annotated[Path, typer.Option("--out", help="Folder of the grid's runs.")],
    overrides: SetOption = None,
    split: Annotated[str, typer.Option("--split", help="Split every point is scored on.")] = "val",
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = False,
) -> None:
    """Train CONFIG at every point of a loss-weight grid and pick the weights with the best Δ_T
    against single-task baselines (DenseMTL's weight search)."""
    from drivemtl.engine.grid_search import format_grid, parse_axis
    from drivemtl.engine.grid_search import grid_search as search
    from drivemtl.engine.run_config import load_run_config

    axes = dict(parse_axis(text) for text in weights)
    cfg = load_run_config(config, overrides or [])
    result = search(cfg, axes, baselines, metrics, out, split=split, progress=progress)
    typer.echo(format_grid(result))
    best = result.best
    chosen = ", ".join(f"{t}: {w:g}" for t, w in best.weights.items())
    typer.echo(f"best: {{{chosen}}} (Δ_T {best.delta:+.2f} %), grid: {out / 'grid.json'}")
