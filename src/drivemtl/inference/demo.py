"""`drivemtl demo`: synthesise data, train one multi-task model, evaluate it, write a report.

The whole main job on the embedded default (the synthetic driving world), sized to run in about
ten minutes on a 2-core CPU: a BDD100K-like dataset with disjoint image sets, a two-stage recipe
with set-level round-robin over partial labels, evaluation of every task on held-out frames next
to a trivial baseline, and a Markdown + HTML report with loss curves and prediction overlays.
"""

from __future__ import annotations

import csv
import math
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import torch
import yaml

from drivemtl.config.loader import validate_tree
from drivemtl.data import build_dataset
from drivemtl.data.config import DataConfig
from drivemtl.data.png_codecs import write_png
from drivemtl.data.writers import PredictionWriter
from drivemtl.engine.run_config import RunConfig
from drivemtl.errors import DriveMTLError
from drivemtl.evaluation.runner import build_evaluators
from drivemtl.inference.demo_video import (
    VIDEO_TASKS,
    ClipRecorder,
    flow_picture,
    new_id_per_detection,
)
from drivemtl.inference.predictor import load_model
from drivemtl.inference.report import DemoReport, TaskScore, plot_loss_curves, write_report
from drivemtl.inference.sources import read_image
from drivemtl.inference.visualize import (
    display_scale,
    draw_overlay,
    legend_entries,
    with_legend,
)
from drivemtl.log import get_logger
from drivemtl.structures.batch import Batch, collate
from drivemtl.structures.bdd import DETECTION_CLASSES_10, IGNORE_INDEX
from drivemtl.structures.predictions import FramePrediction

LOG = get_logger(__name__)
MARKER = ".drivemtl-demo"
SET_TASKS = {
    "detection": ["tagging", "detection", "pose", "drivable", "lanes"],
    "segmentation": ["semantic", "instance", "depth", "normals", "edges"],
    # flow is left out: a clip step with its census loss costs ~4x an image step, and at the
    # demo's budget it does not reliably beat zero flow (docs/video_tasks.md)
    "tracking": ["mot", "mots"],
}
IMAGE_SETS = ("detection", "segmentation")
# The tracking clips' references: the next frame (what flow is scored against; MOT learns its
# embeddings from the same adjacent pairs).
CLIP = {"length": 2, "sampling": "next"}

# task -> (headline metric, higher is better, baseline description)
HEADLINES: dict[str, tuple[str, bool, str]] = {
    "tagging": ("acc", True, "majority class per attribute"),
    "semantic": ("mIoU", True, "majority class everywhere"),
    "drivable": ("VTD_mIoU", True, "all background"),
    "lanes": ("VTD_mIoU", True, "all background"),
    "detection": ("AP", True, "no detections"),
    "instance": ("AP", True, "no instances"),
    "pose": ("AP", True, "no poses"),
    "depth": ("AbsRel", False, "training-set mean depth"),
    "normals": ("mean", False, "training-set mean normal"),
    "edges": ("F1", True, "every pixel an edge"),
    "mot": ("HOTA", True, "a new id for every detection in every frame"),
    "mots": ("HOTA", True, "a new id for every mask in every frame"),
}


@dataclass
class DemoOptions:
    """Size and length of the demo; the defaults fit the 10-minute budget on 2 CPU cores."""

    out_dir: Path = Path("runs/demo")
    train_frames: int = 240
    val_frames: int = 40
    video_frames: int = 24  # 8-frame clips of the tracking set
    video_val_frames: int = 16
    size: tuple[int, int] = (320, 192)
    steps: int = 600
    batch_size: int = 4
    seed: int = 0
    overlays: int = 4
    threads: int | None = None
    progress: bool = True


@dataclass
class DemoResult:
    """Where the report is, and the scores it shows."""

    report_md: Path
    report_html: Path
    scores: list[TaskScore]
    predictions: Path
    overlays: list[Path]
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def all_beat_baseline(self) -> bool:
        """Whether every task beats its trivial baseline."""
        return all(s.beats_baseline for s in self.scores)


def _prepare_out_dir(out: Path) -> None:
    """Use `out` if it is new, empty or an earlier demo's folder; never wipe anything else."""
    if out.exists() and any(out.iterdir()):
        if not (out / MARKER).is_file():
            raise DriveMTLError(
                f"{out}: folder exists and was not written by `drivemtl demo`; choose another --out"
            )
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text("written by drivemtl demo; rerunning the demo replaces it\n")


def _check_options(opts: DemoOptions) -> None:
    width, height = opts.size
    if width <= 0 or height <= 0 or width % 2 or height % 2:
        raise DriveMTLError(f"--size must be WxH with positive even numbers, got {width}x{height}")
    for name in (
        "train_frames",
        "val_frames",
        "video_frames",
        "video_val_frames",
        "steps",
        "batch_size",
    ):
        if getattr(opts, name) < 1:
            raise DriveMTLError(f"demo option {name} must be >= 1, got {getattr(opts, name)}")


def demo_config(opts: DemoOptions, data_dir: Path) -> RunConfig:
    """The packaged demo config with the dataset, sizes, steps and seed of `opts` filled in."""
    source = resources.files("drivemtl.resources").joinpath("demo.yaml")
    raw = yaml.safe_load(source.read_text(encoding="utf-8"))
    raw["seed"] = opts.seed
    stages = raw["recipe"]["stages"]
    first = max(1, round(opts.steps * 2 / 3))
    stages[0]["steps"] = first
    stages[1]["steps"] = max(1, opts.steps - first)
    stages[0]["schedule"]["warmup_steps"] = min(stages[0]["schedule"]["warmup_steps"], first // 4)
    for stage in stages:
        stage["batch_size"] = opts.batch_size
    height = opts.size[1]
    raw["data"] = {
        "sets": {
            name: {"root": str(data_dir / "{split}" / name), "tasks": SET_TASKS[name]}
            for name in IMAGE_SETS
        },
        "transforms": {
            "heights": sorted({height - 32, height, height + 32} - {0}),
            "test_height": height,
            "flip": 0.5,
        },
    }
    raw["data"]["sets"]["tracking"] = {
        "root": str(data_dir / "video" / "{split}" / "tracking"),
        "tasks": SET_TASKS["tracking"],
        "clip": dict(CLIP),
    }
    return validate_tree(raw, {}, RunConfig, "drivemtl/resources/demo.yaml")


def _generate(opts: DemoOptions, data_dir: Path) -> None:
    from drivemtl.data.synthetic import generate_dataset

    for split, frames, clips, seed in (
        ("train", opts.train_frames, opts.video_frames, opts.seed),
        ("val", opts.val_frames, opts.video_val_frames, opts.seed + 10_000),
    ):
        LOG.info("synthesising %d %s frames + %d of clips at %dx%d", frames, split, clips,
                 *opts.size)  # fmt: skip
        generate_dataset(
            data_dir / split, preset="demo", num_frames=frames, size=opts.size, seed=seed,
            overwrite=True, progress=opts.progress,
        )  # fmt: skip
        generate_dataset(
            data_dir / "video" / split, preset="tracking", num_frames=clips, size=opts.size,
            seed=seed + 20_000, overwrite=True, progress=opts.progress,
        )  # fmt: skip


def _batches(dataset, batch_size: int, size_divisor: int) -> Iterator[Batch]:
    """Batches of consecutive frames, set by set (never two sets in a batch; clips in order)."""
    for name in dataset.sets:
        frames = dataset.set_range(name)
        for start in range(0, len(frames), batch_size):
            chunk = frames[start : start + batch_size]
            yield collate([dataset[i] for i in chunk], size_divisor)


@dataclass
class _Stats:
    """Training-set statistics the trivial baselines are made of."""

    tags: torch.Tensor
    semantic_class: int
    mean_depth: float
    mean_normal: torch.Tensor


def _training_stats(config: RunConfig, limit: int = 120) -> _Stats:
    dataset = build_dataset(config.data, split="train", transform=None)
    tag_counts = torch.zeros(3, 16, dtype=torch.int64)
    sem_counts = torch.zeros(19, dtype=torch.int64)
    depth_sum, depth_n = 0.0, 0
    normal_sum = torch.zeros(3, dtype=torch.float64)
    step = max(1, len(dataset) // limit)
    for i in range(0, len(dataset), step):
        sample = dataset[i]
        if sample.tags is not None and sample.has("tagging"):
            for k in range(3):
                if int(sample.tags[k]) != IGNORE_INDEX:
                    tag_counts[k, int(sample.tags[k])] += 1
        if sample.semantic is not None and sample.has("semantic"):
            valid = sample.semantic[sample.semantic != IGNORE_INDEX]
            sem_counts += torch.bincount(valid.flatten(), minlength=19)[:19]
        if sample.depth is not None and sample.has("depth"):
            valid = sample.depth[sample.depth > 0]
            depth_sum += float(valid.double().sum())
            depth_n += int(valid.numel())
        if sample.normals is not None and sample.has("normals"):
            mask = sample.normals.abs().sum(0) > 0
            normal_sum += sample.normals[:, mask].double().sum(1)
    mean_normal = normal_sum / normal_sum.norm().clamp(min=1e-12)
    return _Stats(
        tags=tag_counts.argmax(dim=1),
        semantic_class=int(sem_counts.argmax()),
        mean_depth=depth_sum / max(depth_n, 1),
        mean_normal=mean_normal.float(),
    )


def _baseline(meta, stats: _Stats) -> FramePrediction:
    """The trivial prediction of every task for one frame (original size)."""
    h, w = meta.orig_size
    return FramePrediction(
        meta=meta,
        tags=stats.tags.clone(),
        semantic=torch.full((h, w), stats.semantic_class, dtype=torch.int64),
        drivable=torch.full((h, w), 2, dtype=torch.int64),
        lanes=torch.zeros((3, h, w), dtype=torch.int64),
        depth=torch.full((h, w), stats.mean_depth),
        normals=stats.mean_normal.view(3, 1, 1).expand(3, h, w).clone(),
        edges=torch.ones((h, w)),
    )


def _loss_curves(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Per-task training losses from every stage's CSV log, on one global step axis."""
    curves: dict[str, list[tuple[int, float]]] = {}
    offset = 0
    for metrics in sorted(run_dir.glob("stages/*/logs/csv/**/metrics.csv")):
        last = 0
        with metrics.open(newline="") as handle:
            for row in csv.DictReader(handle):
                step = int(float(row.get("step") or 0))
                last = max(last, step)
                for key, value in row.items():
                    if key and "loss" in key and value not in ("", None):
                        name = key.split("/", 1)[-1] if "/" in key else key
                        curves.setdefault(name, []).append((offset + step, float(value)))
        offset += last + 1
    return curves


def _timed(timings: dict[str, float], name: str, fn: Callable[[], object]) -> object:
    start = time.perf_counter()
    value = fn()
    timings[name] = time.perf_counter() - start
    return value


def run_demo(opts: DemoOptions) -> DemoResult:
    """Run the whole demo into `opts.out_dir` and return where the report is."""
    from drivemtl.engine.trainer import run_recipe

    _check_options(opts)
    if opts.threads:
        torch.set_num_threads(opts.threads)
    out = opts.out_dir
    _prepare_out_dir(out)
    timings: dict[str, float] = {}
    start = time.perf_counter()
    data_dir = out / "data"
    _timed(timings, "synthesise data", lambda: _generate(opts, data_dir))
    config = demo_config(opts, data_dir.resolve())
    result = _timed(
        timings, "train", lambda: run_recipe(config, out / "train", progress=opts.progress)
    )
    weights = result.final_weights  # type: ignore[attr-defined]
    scores, metrics, predictions, overlays, pictures = _timed(
        timings, "evaluate", lambda: _evaluate(config, weights, out, opts)
    )  # type: ignore[misc]
    curves = plot_loss_curves(_loss_curves(out / "train"), out / "plots" / "losses.png")
    timings["total"] = time.perf_counter() - start
    card = (
        (data_dir / "train" / "dataset.yaml").read_text(encoding="utf-8")
        + "---\n"
        + (data_dir / "video" / "train" / "dataset.yaml").read_text(encoding="utf-8")
    )
    beaten = sum(s.beats_baseline for s in scores)
    summary = (
        f"One {len(config.model.tasks)}-task network (ResNet-18 width 16 + FPN) trained for "
        f"{opts.steps} steps on {opts.train_frames} synthetic frames and "
        f"{opts.video_frames} frames of video clips at {opts.size[0]}x{opts.size[1]} whose "
        f"image sets carry disjoint labels, evaluated on {opts.val_frames} held-out frames and "
        f"{opts.video_val_frames} of held-out clips. {beaten} of {len(scores)} tasks beat "
        "their trivial baseline."
    )
    report = DemoReport(
        title="DriveMTL demo: one network, every task, partial labels",
        summary=summary,
        dataset_card=card,
        recipe=yaml.safe_dump(
            config.recipe.model_dump(mode="json"),
            sort_keys=False,  # type: ignore[union-attr]
        ),
        scores=scores,
        metrics=metrics,
        loss_curves=curves,
        overlays=overlays,
        clip=pictures.gif,
        clip_strip=pictures.strip,
        flow_pictures=pictures.flow,
        timings=timings,
    )
    md, html = write_report(report, out)
    return DemoResult(md, html, scores, predictions, overlays, timings)


@dataclass
class _VideoPictures:
    """What the report shows of the tracking clips: a GIF, a strip of frames, flow pictures."""

    clip: ClipRecorder = field(default_factory=ClipRecorder)
    flow: list[Path] = field(default_factory=list)
    gif: Path | None = None
    strip: Path | None = None


def _video_frames(
    predictions: list[FramePrediction], batch: Batch, pictures: _VideoPictures, out: Path,
    limit: int = 2,
) -> None:  # fmt: skip
    """Add a tracking batch's frames to the clip and its first frames' flow to the pictures."""
    for i, prediction in enumerate(predictions):
        meta = prediction.meta
        if meta.image_path is None:
            continue
        image = read_image(Path(meta.image_path))
        pictures.clip.add(image, prediction)
        if prediction.flow is None or len(pictures.flow) >= limit:
            continue
        truth = None
        if batch.flow is not None and bool(batch.is_labeled("flow")[i]):
            h, w = batch.image_sizes[i]
            truth = batch.flow[i, :, :h, :w].cpu().numpy()
            if truth.shape[1:] != image.shape[:2]:
                truth = None
        picture = flow_picture(image, prediction.flow.cpu().numpy(), truth)
        path = out / "flow" / f"{Path(meta.name).stem}.png"
        write_png(path, picture)
        pictures.flow.append(path)


def _image_overlay(prediction: FramePrediction, out: Path) -> Path:
    """The overlay picture of one image-set frame, with its legend."""
    meta = prediction.meta
    image = read_image(Path(meta.image_path))  # type: ignore[arg-type]
    path = out / "overlays" / f"{meta.image_set}-{Path(meta.name).stem}.png"
    overlay = draw_overlay(image, prediction, scale=display_scale(image.shape[1]))
    write_png(path, with_legend(overlay, legend_entries(prediction)))
    return path


def _evaluate(config: RunConfig, weights: Path, out: Path, opts: DemoOptions):
    """Model and baselines through the same evaluators on the held-out split; the tracking
    clips frame by frame in video order, the tracker memory carried along."""
    data: DataConfig = config.data  # type: ignore[assignment]
    model = load_model(config, weights)
    tasks = [t for t in model.task_names if t in HEADLINES]
    stats = _training_stats(config)
    dataset = build_dataset(data, split="val")
    classes = {t: p.classes for t, p in model.tasks.items()
               if isinstance(getattr(p, "classes", None), tuple)}  # fmt: skip
    classes.update({"detection": DETECTION_CLASSES_10, "instance": DETECTION_CLASSES_10})
    model_evals = build_evaluators(tasks, classes)
    base_evals = build_evaluators(tasks, classes)
    writer = PredictionWriter(out / "predictions")
    overlays: list[Path] = []
    per_set_overlays: dict[str, int] = {}
    per_set_quota = math.ceil(opts.overlays / len(IMAGE_SETS))
    pictures = _VideoPictures()
    state, counter = None, [0]
    for batch in _batches(dataset, opts.batch_size, data.size_divisor):
        image_set = batch.metas[0].image_set
        set_tasks = [t for t in tasks if t in SET_TASKS.get(image_set, ())]
        if image_set == "tracking":
            predictions, state = model.predict_with_state(batch, state, set_tasks)
            baselines = new_id_per_detection(predictions, counter)
            _video_frames(predictions, batch, pictures, out)
        else:
            image_tasks = [t for t in tasks if t not in VIDEO_TASKS]
            predictions = model.predict(batch, image_tasks)
            baselines = [_baseline(meta, stats) for meta in batch.metas]
        for name in set_tasks:
            model_evals[name].update(predictions, batch)  # type: ignore[attr-defined]
            base_evals[name].update(baselines, batch)  # type: ignore[attr-defined]
        if image_set == "tracking":
            continue
        for prediction in predictions:
            writer.add(prediction)
            done = per_set_overlays.get(image_set, 0)
            if prediction.meta.image_path is not None and done < per_set_quota:
                overlays.append(_image_overlay(prediction, out))
                per_set_overlays[image_set] = done + 1
    predictions_path = writer.close()
    pictures.gif = pictures.clip.write_gif(out / "video" / "tracked_clip.gif")
    pictures.strip = pictures.clip.write_strip(out / "video" / "tracked_strip.png")
    scores, metrics = [], {}
    for task in tasks:
        model_metrics = model_evals[task].compute()  # type: ignore[attr-defined]
        base_metrics = base_evals[task].compute()  # type: ignore[attr-defined]
        key, higher, description = HEADLINES[task]
        value = float(model_metrics.get(key, math.nan))
        baseline = float(base_metrics.get(key, math.nan))
        scores.append(TaskScore(task, key, value, baseline, description, higher))
        metrics[task] = {k: float(v) for k, v in model_metrics.items() if "/" not in k}
    return scores, metrics, predictions_path, overlays, pictures
