"""Delta_T (DenseMTL, Vandenhende et al.): mean relative gain of a multi-task model over
single-task baselines, signed so that a positive value is always an improvement."""

from __future__ import annotations

import json
from pathlib import Path

# Metrics where lower is better; every other metric is higher-is-better.
LOWER_IS_BETTER: frozenset[str] = frozenset(
    {"AbsRel", "SqRel", "RMSE", "RMSE_log", "mean", "median", "EPE", "FP", "FN", "IDSw", "ML", "FM"}
)


def metric_name(key: str) -> str:
    """The metric part of a `task/metric` or `metric/class` key (`depth/RMSE` -> `RMSE`)."""
    return key.split("/")[-1] if "/" in key else key


def delta_t(
    multi: dict[str, float],
    single: dict[str, float],
    lower_is_better: frozenset[str] = LOWER_IS_BETTER,
) -> float:
    """100 / T * sum_t (-1)^l_t (M_t - S_t) / S_t over the keys of `single`, in percent."""
    if not single:
        raise ValueError("delta_T needs at least one single-task metric")
    missing = [k for k in single if k not in multi]
    if missing:
        raise KeyError(f"multi-task results lack metric(s) {missing}")
    total = 0.0
    for key, base in single.items():
        if base == 0:
            raise ValueError(f"single-task metric {key!r} is 0; relative gain undefined")
        sign = -1.0 if metric_name(key) in lower_is_better else 1.0
        total += sign * (multi[key] - base) / base
    return 100.0 * total / len(single)


def load_results(path: str | Path) -> dict[str, float]:
    """A flat `{"task/metric": value}` JSON file (e.g. a metrics.json from `drivemtl eval`)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: single-task results file not found")
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict) or not all(isinstance(v, int | float) for v in data.values()):
        raise ValueError(f"{path}: expected a flat JSON object of numbers")
    return {k: float(v) for k, v in data.items()}
