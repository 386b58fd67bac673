"""VTDA (VTDNet, ICCV'23 sec. 3.2 / F.2): scaled task scores averaged per group, groups summed.

Each metric x_t (percent) has a scaling factor s_t = 1 / ceil(2 sigma_t), sigma_t being its spread
over single-task baselines. A group score is the s_t-weighted mean sum(s_t x_t) / sum(s_t) of its
metrics (normalised to 0..100, as the paper's tables are); VTDA is the sum of the group scores.
Metrics that were not evaluated are dropped from their group's mean.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

GROUPS = ("classification", "segmentation", "localization", "association")

# metric key -> (group, s_t) from the paper's Table 14 (s_t as printed: 1/1, 1/2, 1/3, 1/4, 1/5, 1/7)
PAPER_SCALES: dict[str, tuple[str, float]] = {
    "tagging/weather": ("classification", 1.0),
    "tagging/scene": ("classification", 1 / 2),
    "semantic/mIoU": ("segmentation", 1 / 5),
    "drivable/mIoU": ("segmentation", 1 / 2),
    "lanes/mIoU": ("segmentation", 1 / 2),
    "detection/AP": ("localization", 1 / 3),
    "instance/AP": ("localization", 1 / 4),
    "pose/AP": ("localization", 1 / 7),
    "mot/AP": ("localization", 1 / 3),
    "mots/AP": ("localization", 1 / 4),
    "flow/mIoU": ("association", 1 / 2),
    "mot/AssA": ("association", 1 / 2),
    "mots/AssA": ("association", 1 / 3),
}


def scale_from_sigma(sigma: float) -> float:
    """s_t = 1 / ceil(2 sigma_t)."""
    if sigma <= 0:
        raise ValueError(f"sigma must be positive, got {sigma}")
    return 1.0 / math.ceil(2.0 * sigma)


def scales_from_sigmas(sigmas: dict[str, float]) -> dict[str, tuple[str, float]]:
    """Scaling table from measured sigmas (keys as in `PAPER_SCALES`)."""
    unknown = set(sigmas) - set(PAPER_SCALES)
    if unknown:
        raise KeyError(f"unknown VTDA metric(s) {sorted(unknown)}; known: {sorted(PAPER_SCALES)}")
    return {k: (PAPER_SCALES[k][0], scale_from_sigma(s)) for k, s in sigmas.items()}


@dataclass
class VtdaResult:
    """Group scores (NaN for a group with no metric) and their sum."""

    groups: dict[str, float]
    total: float

    def as_dict(self) -> dict[str, float]:
        """`VTDA` and `VTDA/<group>`."""
        return {"VTDA": self.total} | {f"VTDA/{g}": v for g, v in self.groups.items()}


def vtda(
    scores: dict[str, float], scales: dict[str, tuple[str, float]] | None = None
) -> VtdaResult:
    """VTDA of `scores` ({"semantic/mIoU": 59.7, ...}, percent); unknown keys are ignored."""
    table = scales or PAPER_SCALES
    groups = {}
    for group in GROUPS:
        members = [
            (scores[k], s)
            for k, (g, s) in table.items()
            if g == group and k in scores and not math.isnan(scores[k])
        ]
        weight = sum(s for _, s in members)
        groups[group] = sum(x * s for x, s in members) / weight if members else math.nan
    total = sum(v for v in groups.values() if not math.isnan(v))
    return VtdaResult(groups, total)


# VTDA metric key -> the `task/metric` key our evaluators report it under.
RESULT_KEYS: dict[str, str] = {
    "tagging/weather": "tagging/acc/weather",
    "tagging/scene": "tagging/acc/scene",
    "semantic/mIoU": "semantic/mIoU",
    "drivable/mIoU": "drivable/VTD_mIoU",
    "lanes/mIoU": "lanes/VTD_mIoU",
    "detection/AP": "detection/AP",
    "instance/AP": "instance/AP",
    "pose/AP": "pose/AP",
    "mot/AP": "mot/AP",
    "mots/AP": "mots/AP",
    "flow/mIoU": "flow/mIoU",
    "mot/AssA": "mot/AssA",
    "mots/AssA": "mots/AssA",
}


def vtda_scores(results: dict[str, dict[str, float]]) -> dict[str, float]:
    """The VTDA inputs found in evaluator results ({task: {metric: value}}), by VTDA key."""
    flat = {f"{t}/{k}": v for t, metrics in results.items() for k, v in metrics.items()}
    return {key: flat[source] for key, source in RESULT_KEYS.items() if source in flat}
