"""Loss-weight grid search: train the recipe once per point of a weight grid, score every run
against single-task baselines with Δ_T, and pick the best weights (how DenseMTL chose its SD /
SDN / SDNE weights for the MTL baseline).

Each point sets the `fixed` loss weighting of every training stage to the point's weights (tasks
not on the grid keep theirs), trains into `OUT/NN-<weights>`, evaluates on `split` into its
`eval/` folder and computes Δ_T over the chosen `task/metric` keys against the baselines'
`metrics.json`. `OUT/grid.json` lists every point; the best is the one with the largest Δ_T.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from drivemtl.engine.checkpoint import write_json
from drivemtl.engine.plan import RecipeError
from drivemtl.engine.run_config import RunConfig


@dataclass
class GridPoint:
    """One trained point: its weights, run folder, the chosen metrics and their Δ_T."""

    weights: dict[str, float]
    run_dir: Path
    metrics: dict[str, float]
    delta: float


@dataclass
class GridResult:
    """Every point in grid order and the index of the best (largest Δ_T)."""

    points: list[GridPoint] = field(default_factory=list)

    @property
    def best(self) -> GridPoint:
        """The point with the largest Δ_T (the first of equals)."""
        return max(self.points, key=lambda p: p.delta)


def weight_grid(axes: Mapping[str, Sequence[float]]) -> list[dict[str, float]]:
    """Every combination of the axes' values, the last axis varying fastest."""
    if not axes or any(len(v) == 0 for v in axes.values()):
        raise RecipeError("grid search: give at least one value for every task on the grid")
    names = list(axes)
    return [dict(zip(names, map(float, values), strict=True)) for values in
            itertools.product(*(axes[n] for n in names))]  # fmt: skip


def parse_axis(text: str) -> tuple[str, list[float]]:
    """`semantic=50,100` -> ("semantic", [50.0, 100.0]) (a RecipeError naming the text)."""
    task, sep, values = text.partition("=")
    try:
        parsed = [float(v) for v in values.split(",") if v.strip()]
    except ValueError:
        parsed = []
    if not sep or not task or not parsed:
        raise RecipeError(f"--weights {text!r}: expected TASK=W1,W2,... (e.g. semantic=50,100)")
    return task.strip(), parsed


def baseline_metrics(files: Sequence[Path], keys: Sequence[str]) -> dict[str, float]:
    """The `keys` (task/metric) found in the single-task runs' `metrics.json` files (a later
    file wins); a key no file has is an error."""
    from drivemtl.evaluation.delta import load_results  # evaluation sits beside the engine

    merged: dict[str, float] = {}
    for path in files:
        for key, value in load_results(path).items():
            if key in keys:
                merged[key] = value
    missing = [k for k in keys if k not in merged]
    if missing:
        names = ", ".join(str(f) for f in files)
        raise RecipeError(f"grid search: no baseline value for {missing} in {names}")
    return merged


def with_weights(config: RunConfig, weights: Mapping[str, float]) -> RunConfig:
    """`config` with every training stage's loss weighting fixed at `weights` (others kept)."""
    if config.recipe is None:
        raise RecipeError("grid search: the config has no `recipe`")
    unknown = [t for t in weights if t not in config.model.tasks]
    if unknown:
        raise RecipeError(f"grid search: tasks {unknown} are not in model.tasks")
    tree = config.model_dump(mode="json")
    for stage in tree["recipe"]["stages"]:
        weighting = stage.get("loss_weighting") or {"type": "fixed"}
        if weighting.get("type", "fixed") != "fixed":
            raise RecipeError(
                f"grid search: stage {stage['name']!r} uses loss weighting "
                f"{weighting['type']!r}; the grid sets fixed weights"
            )
        weighting["weights"] = {**weighting.get("weights", {}), **weights}
        stage["loss_weighting"] = weighting
    return RunConfig.model_validate(tree)


def point_name(index: int, weights: Mapping[str, float]) -> str:
    """`03-semantic50_depth1` (folder of a grid point)."""
    parts = "_".join(f"{t}{w:g}" for t, w in weights.items())
    return f"{index:02d}-{parts}"


def grid_search(
    config: RunConfig,
    axes: Mapping[str, Sequence[float]],
    baselines: Sequence[Path],
    keys: Sequence[str],
    out_dir: Path,
    split: str = "val",
    progress: bool = False,
) -> GridResult:
    """Train and score every point of the grid (see the module doc); writes `OUT/grid.json`."""
    from drivemtl.engine.trainer import run_recipe
    from drivemtl.evaluation.delta import delta_t
    from drivemtl.evaluation.model_eval import evaluate_model
    from drivemtl.evaluation.report import flatten

    single = baseline_metrics(baselines, keys)
    grid = weight_grid(axes)
    configs = [with_weights(config, w) for w in grid]  # every point validated before training
    result = GridResult()
    for index, (weights, cfg) in enumerate(zip(grid, configs, strict=True)):
        run_dir = Path(out_dir) / point_name(index, weights)
        resume = (run_dir / "run.json").is_file()
        run = run_recipe(cfg, run_dir, resume=resume, progress=progress)
        scored = evaluate_model(cfg, run.final_weights, out_dir=run_dir / "eval", split=split,
                                progress=progress, resources=False)  # fmt: skip
        flat = flatten(scored.metrics)
        chosen = {k: flat[k] for k in keys if k in flat}
        delta = delta_t(chosen, single) if len(chosen) == len(keys) else math.nan
        result.points.append(GridPoint(weights, run_dir, chosen, delta))
        _write(result, single, Path(out_dir) / "grid.json")
    return result


def _write(result: GridResult, single: Mapping[str, float], path: Path) -> None:
    best = result.best
    write_json(
        {
            "baseline": dict(single),
            "points": [_point_record(p) for p in result.points],
            "best": {"weights": best.weights, "delta_T": best.delta, "run": str(best.run_dir)},
        },
        path,
    )


def _point_record(point: GridPoint) -> dict:
    return {
        "weights": point.weights,
        "run": str(point.run_dir),
        "metrics": point.metrics,
        "delta_T": point.delta,
    }


def format_grid(result: GridResult) -> str:
    """Markdown table of the points (weights, metrics, Δ_T), the best marked."""
    keys = list(result.points[0].metrics)
    tasks = list(result.points[0].weights)
    lines = ["| " + " | ".join([*tasks, *keys, "Δ_T (%)", ""]) + " |",
             "|" + "---|" * (len(tasks) + len(keys) + 2)]  # fmt: skip
    best = result.best
    for p in result.points:
        cells = [f"{p.weights[t]:g}" for t in tasks] + [f"{p.metrics[k]:.4g}" for k in keys]
        mark = "best" if p is best else ""
        lines.append("| " + " | ".join([*cells, f"{p.delta:+.2f}", mark]) + " |")
    return "\n".join(lines)
