"""`drivemtl eval`: run a trained model over the evaluation split and score every task it has.

The model comes from the run config (`build_model(cfg.model)`) and a weights file that must fit it
exactly; the frames come from `build_dataset(cfg.data, split)` with the deterministic eval
transforms, read set by set in order. Each task is scored by its registered evaluator on the sets
labelled for it; the results (plus VTDA where its inputs exist, and the model's parameters / MACs
per component) go to `metrics.json` and `metrics.md`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn
from torch.utils.data import Sampler

from drivemtl.engine.run_config import RunConfig
from drivemtl.evaluation.report import markdown_table, write_report
from drivemtl.evaluation.runner import build_evaluators
from drivemtl.evaluation.vtda import vtda, vtda_scores
from drivemtl.log import get_logger
from drivemtl.models.weights import fit_problems
from drivemtl.outputs import check_output_dir
from drivemtl.structures.batch import Batch
from drivemtl.structures.predictions import FramePrediction

if TYPE_CHECKING:
    from drivemtl.data.dataset import MultiSetDataset

LOG = get_logger(__name__)


class ModelEvalError(ValueError):
    """The config, checkpoint or set selection cannot be evaluated; the message names the cause."""


@dataclass
class EvalResult:
    """Metrics per task (plus `vtda` and `resources` rows), frames scored per set, frames left out
    per set for bad input (`data.on_error: skip`) and the written files."""

    metrics: dict[str, dict[str, float]]
    frames: dict[str, int]
    checkpoint: Path
    skipped: dict[str, int] = field(default_factory=dict)
    resources: dict[str, float] = field(default_factory=dict)
    resources_text: str = ""
    json_path: Path | None = None
    markdown_path: Path | None = None

    @property
    def table(self) -> str:
        """The Markdown tables of every row of `metrics`."""
        return markdown_table(self.metrics)


class SequentialSetBatches(Sampler[list[int]]):
    """Batches of consecutive indices, never mixing image sets, every frame exactly once."""

    def __init__(self, set_ranges: list[range], batch_size: int) -> None:
        if batch_size < 1:
            raise ModelEvalError(f"batch size must be >= 1, got {batch_size}")
        self.batches = [
            list(r[k : k + batch_size]) for r in set_ranges for k in range(0, len(r), batch_size)
        ]

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


def read_checkpoint(path: str | Path) -> dict[str, Tensor]:
    """Tensors of a `.safetensors` / torch weights file (torch files with weights_only=True)."""
    from drivemtl.models.weights import read_state_dict

    path = Path(path)
    try:
        return read_state_dict(path)
    except FileNotFoundError:
        raise ModelEvalError(f"checkpoint not found: {path}") from None
    except Exception as exc:  # safetensors / torch raise several types for corrupt files
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ModelEvalError(f"{path}: cannot read checkpoint ({first})") from None


def load_checkpoint(model: nn.Module, path: str | Path) -> None:
    """Load weights that must fit `model` exactly; otherwise a one-line error naming the file.

    A Lightning-style `model.` prefix on every key is removed; `num_batches_tracked` buffers may be
    absent (older checkpoints).
    """
    path = Path(path)
    state = read_checkpoint(path)
    own = model.state_dict()
    if state and not set(state) & set(own) and all(k.startswith("model.") for k in state):
        state = {k[len("model.") :]: v for k, v in state.items()}
    problems = fit_problems(own, state)
    if problems:
        raise ModelEvalError(
            f"{path}: checkpoint does not fit the model of this config: {'; '.join(problems)}"
        )
    model.load_state_dict({k: v for k, v in state.items() if k in own}, strict=False)


def _select_sets(config: RunConfig, sets: list[str] | None) -> RunConfig:
    if config.data is None:
        raise ModelEvalError("the config has no `data` section: nothing to evaluate on")
    if not sets:
        return config
    unknown = [s for s in sets if s not in config.data.sets]
    if unknown:
        raise ModelEvalError(
            f"--sets {', '.join(unknown)}: not in data.sets (known: {', '.join(config.data.sets)})"
        )
    data = config.data.model_copy(
        update={"sets": {s: config.data.sets[s] for s in sets}, "label_setting": None}
    )
    return config.model_copy(update={"data": data})


def _warn_split_agnostic(dataset: MultiSetDataset, names: list[str], split: str) -> None:
    """Warn once when split `split` is read from sets that have no splits (their frames are the
    same for every split, training included)."""
    shared = [name for name in dataset.split_agnostic_sets() if name in names]
    if shared and split != "train":
        LOG.warning(
            "split %r: set(s) %s declare no `splits` and have no {split} in root or paths, so "
            "every frame of them is evaluated, the training frames included",
            split, ", ".join(shared),
        )  # fmt: skip


def _unique_names(predictions: list[FramePrediction], image_set: str) -> list[FramePrediction]:
    """Prefix frame names with their set, so that equal names in two sets stay distinct."""
    return [
        dataclasses.replace(p, meta=dataclasses.replace(p.meta, name=f"{image_set}/{p.meta.name}"))
        for p in predictions
    ]


def _resources(model: nn.Module, input_size: tuple[int, int]) -> tuple[dict[str, float], str]:
    """Parameters and MACs of the whole model and per component at `input_size` (H, W)."""
    from drivemtl.models.summary import format_summary, summarize

    summary = summarize(model, input_size)  # type: ignore[arg-type]
    row: dict[str, float] = {
        "params_M": summary.total_params / 1e6,
        "GMACs": summary.total_macs / 1e9,
        "input_height": float(input_size[0]),
        "input_width": float(input_size[1]),
    }
    for component in [*summary.shared, *summary.heads]:
        row[f"params_M/{component.name}"] = component.params / 1e6
        row[f"GMACs/{component.name}"] = component.macs / 1e9
    return row, format_summary(summary)


def evaluate_model(
    config: RunConfig | str | Path,
    checkpoint: str | Path,
    sets: list[str] | None = None,
    out_dir: str | Path | None = None,
    batch_size: int = 4,
    progress: bool = True,
    *,
    split: str = "val",
    overrides: list[str] | None = None,
    device: str | None = None,
    num_workers: int = 0,
    resources: bool = True,
) -> EvalResult:
    """Score the model of `config` with the weights in `checkpoint` on `sets` (default: all).

    Writes `metrics.json` / `metrics.md` into `out_dir` when given. Rows of `metrics`: one per
    evaluated task, `vtda` when any of its inputs was evaluated, `resources` (params / MACs).
    """
    from drivemtl.data import build_dataset, build_loader
    from drivemtl.engine.run_config import load_run_config
    from drivemtl.models import build_model

    if out_dir is not None:
        check_output_dir(out_dir)  # before the model runs

    if not isinstance(config, RunConfig):
        config = load_run_config(config, overrides or [])
    config = _select_sets(config, sets)
    data = config.data
    assert data is not None
    checkpoint = Path(checkpoint)
    model = build_model(config.model)
    load_checkpoint(model, checkpoint)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model.eval().to(device)

    dataset = build_dataset(data, split, drop_skipped=True)
    model_tasks = list(model.task_names)  # type: ignore[attr-defined]
    plugins = getattr(model, "tasks", {})
    classes = {
        t: p.classes for t, p in plugins.items() if isinstance(getattr(p, "classes", None), tuple)
    }
    evaluators = build_evaluators(model_tasks, classes)
    skipped = [t for t in model_tasks if t not in evaluators]
    if skipped:
        LOG.warning("no evaluator for task(s) %s: not scored", skipped)
    set_tasks = {s: [t for t in evaluators if t in dataset.set_tasks(s)] for s in dataset.sets}
    scored_sets = [s for s in dataset.sets if set_tasks[s]]
    if not scored_sets:
        raise ModelEvalError(
            f"no image set of split {split!r} is labelled for a task of the model "
            f"({', '.join(model_tasks)}); sets: {', '.join(dataset.sets)}"
        )
    _warn_split_agnostic(dataset, scored_sets, split)
    sampler = SequentialSetBatches([dataset.set_range(s) for s in scored_sets], batch_size)
    loader = build_loader(dataset, sampler, num_workers, size_divisor=data.size_divisor)
    frames = dict.fromkeys(scored_sets, 0)
    input_size: tuple[int, int] | None = None
    batches: Iterator[Batch] = iter(loader)
    if progress:
        from rich.progress import track

        batches = iter(track(loader, description="evaluating", total=len(sampler)))
    state = None
    with torch.no_grad():
        for batch in batches:
            image_set = batch.metas[0].image_set
            tasks = set_tasks[image_set]
            batch = batch.to(device)
            # Frames come in video order: trackers carry their memory from batch to batch.
            predictions, state = model.predict_with_state(batch, state, tasks)  # type: ignore[operator]
            predictions = _unique_names(predictions, image_set)
            input_size = input_size or tuple(batch.images.shape[-2:])  # type: ignore[assignment]
            frames[image_set] = frames.get(image_set, 0) + len(batch)
            for task in tasks:
                evaluators[task].update(predictions, batch)  # type: ignore[attr-defined]
    skipped_frames = {s: dataset.set_skipped(s) for s in scored_sets}
    if not any(frames.values()):
        raise ModelEvalError(
            f"split {split!r}: no frame to evaluate in set(s) {', '.join(scored_sets)} "
            f"({sum(skipped_frames.values())} skipped for bad input)"
        )
    evaluated = [t for t in evaluators if any(t in ts for ts in set_tasks.values())]
    metrics = {t: evaluators[t].compute() for t in evaluated}  # type: ignore[attr-defined]
    scores = vtda_scores(metrics)
    if scores:
        metrics["vtda"] = vtda(scores).as_dict()
    result = EvalResult(metrics, frames, checkpoint, skipped_frames)
    if resources and input_size is not None:
        result.resources, result.resources_text = _resources(model, input_size)
        metrics["resources"] = result.resources
    if out_dir is not None:
        result.json_path, result.markdown_path = write_report(
            metrics, out_dir, footer=result.resources_text
        )
    return result


def frames_line(frames: Mapping[str, int], skipped: Mapping[str, int] | None = None) -> str:
    """`frames: det 12 (1 skipped), seg 8` for the console: frames scored (and left out) per set."""
    skipped = skipped or {}
    parts = [
        f"{s} {n}" + (f" ({skipped[s]} skipped)" if skipped.get(s) else "")
        for s, n in frames.items()
    ]
    return "frames: " + ", ".join(parts)
