"""Reports: `metrics.json` (flat `task/metric` keys) and a Markdown table per task."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path


def flatten(results: dict[str, dict[str, float]]) -> dict[str, float]:
    """{"semantic": {"mIoU": 70.1}} -> {"semantic/mIoU": 70.1}."""
    return {
        f"{task}/{k}": float(v) for task, metrics in results.items() for k, v in metrics.items()
    }


def _fmt(value: float) -> str:
    if isinstance(value, int):
        return str(value)
    return "–" if math.isnan(value) else f"{value:.2f}"


def markdown_table(
    results: dict[str, dict[str, float]], keys: dict[str, list[str]] | None = None
) -> str:
    """One Markdown table per task: header of metric names, one row of values (2 decimals)."""
    lines = []
    for task, metrics in results.items():
        names = (keys or {}).get(task) or [k for k in metrics if "/" not in k]
        lines.append(f"### {task}\n")
        lines.append("| " + " | ".join(names) + " |")
        lines.append("|" + "---|" * len(names))
        lines.append("| " + " | ".join(_fmt(metrics[n]) for n in names) + " |\n")
    return "\n".join(lines)


def write_report(
    results: dict[str, dict[str, float]], out_dir: str | Path, footer: str = ""
) -> tuple[Path, Path]:
    """Write `metrics.json` (NaN / inf as null) and `metrics.md` (tables, then `footer` verbatim)
    atomically; returns both paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    flat = {k: (v if math.isfinite(v) else None) for k, v in flatten(results).items()}
    json_path = out_dir / "metrics.json"
    md_path = out_dir / "metrics.md"
    markdown = markdown_table(results)
    if footer:
        markdown += "\n```\n" + footer.rstrip("\n") + "\n```\n"
    for path, text in ((json_path, json.dumps(flat, indent=2)), (md_path, markdown)):
        tmp = path.with_name(path.name + f".tmp{os.getpid()}")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
    return json_path, md_path
