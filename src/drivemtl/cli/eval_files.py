"""`drivemtl eval-files`: score BDD100K / Scalabel prediction files like the official toolkit."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from drivemtl.cli.errors import UsageError
from drivemtl.log import get_logger

LOG = get_logger(__name__)


def eval_files(
    task: Annotated[
        str,
        typer.Option(
            help="det, ins_seg, pose, sem_seg, drivable, lane, box_track, seg_track or tagging."
        ),
    ],
    gt: Annotated[
        Path, typer.Option(help="Ground truth: Scalabel JSON (file / folder) or PNG folder.")
    ],
    pred: Annotated[Path, typer.Option(help="Predictions in the same format as the ground truth.")],
    config: Annotated[
        Path | None,
        typer.Option(help="Scalabel / BDD100K config TOML (categories, sizes, sigmas)."),
    ] = None,
    out: Annotated[Path | None, typer.Option(help="Write the summary as JSON here.")] = None,
    strict: Annotated[
        bool,
        typer.Option(
            help="Stop on frames that do not line up (extra, repeated) and unknown categories "
            "instead of treating them as the official toolkit does, with a warning."
        ),
    ] = False,
    lenient: Annotated[
        bool, typer.Option(hidden=True, help="Accepted for compatibility: now the default.")
    ] = False,
) -> None:
    """Evaluate prediction files; prints the official summary (percent) and optionally writes JSON."""
    from drivemtl.evaluation.files import FILE_TASKS, evaluate_files

    if task not in FILE_TASKS:
        raise UsageError(f"--task {task!r} is not one of {', '.join(FILE_TASKS)}")
    if strict and lenient:
        raise UsageError("--strict and --lenient contradict each other")
    result = evaluate_files(task, gt, pred, config, strict=strict)  # warns what it skipped
    table = Table(title=f"{task}: {pred}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in result.metrics.items():
        table.add_row(key, "–" if math.isnan(value) else f"{value:.4f}".rstrip("0").rstrip("."))
    Console().print(table)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        data = {k: (None if math.isnan(v) else v) for k, v in result.metrics.items()}
        tmp = out.with_name(out.name + f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(data, indent=2), encoding="utf-8")
        tmp.replace(out)
