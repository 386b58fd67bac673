"""Delta_T (DenseMTL, Vandenhende et al.): mean relative gain of a multi-task model over
single-task baselines, signed so that a positive value is always an improvement."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
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
    """A flat `{"task/metric": value}` JSON file (e.g. a metrics.json from `drivemtl eval`;
    null, written for NaN / inf, reads as NaN)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: single-task results file not found")
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict) or not all(
        v is None or (isinstance(v, int | float) and not isinstance(v, bool)) for v in data.values()
    ):
        raise ValueError(f"{path}: expected a flat JSON object of numbers")
    return {k: math.nan if v is None else float(v) for k, v in data.items()}


# The metric of each task that Delta_T averages unless told otherwise (one per task).
HEADLINE_METRICS: dict[str, str] = {
    "tagging": "acc", "semantic": "mIoU", "drivable": "VTD_mIoU", "lanes": "VTD_mIoU",
    "detection": "AP", "instance": "AP", "pose": "AP", "mot": "AssA", "mots": "AssA",
    "depth": "AbsRel", "normals": "mean", "edges": "F1", "flow": "mIoU",
}  # fmt: skip


def baseline_files(paths: list[Path]) -> list[Path]:
    """metrics.json files of single-task runs: each path a file, or a folder searched for
    `metrics.json` files (sorted); a path with none is an error."""
    files: list[Path] = []
    for path in paths:
        found = [path] if path.is_file() else sorted(Path(path).rglob("metrics.json"))
        if not found:
            raise FileNotFoundError(f"{path}: no metrics.json (single-task results) found")
        files.extend(found)
    return files


@dataclass
class DeltaReport:
    """Delta_T of a run and, per averaged key, the single-task value and the signed gain (%)."""

    delta: float
    single: dict[str, float]
    gains: dict[str, float]

    def as_dict(self) -> dict[str, float]:
        """`Delta_T`, `keys` (how many) and `gain/<task/metric>`: the `delta` row of a report."""
        return {"Delta_T": self.delta, "keys": len(self.single)} | {
            f"gain/{k}": v for k, v in self.gains.items()
        }


def delta_against(
    multi: dict[str, float], baselines: list[Path], keys: list[str] | None = None
) -> DeltaReport:
    """Delta_T of `multi` (flat `task/metric` results) over single-task runs' metrics.json files
    (a later file wins a key); `keys` default to the headline metric of every task that both
    sides report with a finite value."""
    single_all: dict[str, float] = {}
    for path in baseline_files(baselines):
        single_all.update(load_results(path))
    if keys is None:
        keys = [f"{t}/{m}" for t, m in HEADLINE_METRICS.items()
                if math.isfinite(single_all.get(f"{t}/{m}", math.nan))
                and math.isfinite(multi.get(f"{t}/{m}", math.nan))]  # fmt: skip
        if not keys:
            raise ValueError(
                "no headline metric ("
                + ", ".join(f"{t}/{m}" for t, m in HEADLINE_METRICS.items())
                + ") is reported by both the run and the single-task results; name keys with "
                "--metric"
            )
    missing = [k for k in keys if k not in single_all]
    if missing:
        raise KeyError(f"single-task results lack metric(s) {missing}")
    single = {k: single_all[k] for k in keys}
    gains = {k: delta_t(multi, {k: v}) for k, v in single.items()}
    return DeltaReport(delta_t(multi, single), single, gains)
