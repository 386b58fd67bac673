"""Generate a synthetic multi-task dataset: presets -> worlds -> rendered frames -> files.

`generate_dataset` writes a dataset folder (deterministic for a seed, whatever `workers` is);
`render_sequence` yields in-memory frames for tests and tools.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from drivemtl.data.synthetic.camera import Camera
from drivemtl.data.synthetic.presets import CLIP_FRAMES, PRESETS, set_sizes
from drivemtl.data.synthetic.render import SynthFrame, render_world
from drivemtl.data.synthetic.scene import FPS, generate_world
from drivemtl.data.synthetic.sensor import SensorModel
from drivemtl.data.synthetic.writer import frame_label, write_frame
from drivemtl.structures import bdd
from drivemtl.structures.scalabel import frames_to_json, save_frames

GENERATOR_VERSION = "1.0"
CARD_NAME = "dataset.yaml"


class SynthError(ValueError):
    """Bad generator input (unknown preset, bad size, occupied output folder); one-line message."""


def parse_size(text: str) -> tuple[int, int]:
    """'WxH' -> (W, H); both must be positive even integers."""
    parts = text.lower().split("x")
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
        raise SynthError(f"size {text!r} is not WxH (e.g. 640x360)")
    w, h = (int(p) for p in parts)
    if w <= 0 or h <= 0 or w % 2 or h % 2:
        raise SynthError(f"size {text!r} must have positive even width and height")
    return w, h


def check_size(size: tuple[int, int]) -> tuple[int, int]:
    """Validate a (W, H) pair (positive, even)."""
    w, h = (int(v) for v in size)
    if w <= 0 or h <= 0 or w % 2 or h % 2:
        raise SynthError(f"size {w}x{h} must have positive even width and height")
    return w, h


def render_sequence(
    num_frames: int = 4,
    size: tuple[int, int] = (640, 360),
    seed: int = 0,
    scene: str | None = None,
    weather: str | None = None,
    timeofday: str | None = None,
    flow: bool = True,
) -> Iterator[SynthFrame]:
    """Yield `num_frames` frames of one random scene (all labels, flow to the next frame);
    scene / weather / timeofday are drawn from the seed unless given."""
    w, h = check_size(size)
    rng = np.random.default_rng([seed, 999])
    try:
        world = generate_world(rng, Camera.default(w, h), num_frames + 1, scene, weather, timeofday)
    except ValueError as exc:
        raise SynthError(str(exc)) from None
    yield from render_world(world, video=f"seq{seed:04d}", frames=num_frames, flow=flow)


@dataclass(frozen=True)
class _Job:
    out: str
    set_index: int
    set_name: str
    tasks: tuple[str, ...]
    unit: int
    frames: int
    video: bool
    size: tuple[int, int]
    seed: int
    people: float = 1.0
    weathers: tuple[str, ...] = ()
    times: tuple[str, ...] = ()
    lossless: bool = False
    sensor: SensorModel = field(default_factory=SensorModel)

    def conditions(self) -> dict[str, str | None]:
        """Weather and time of day of this unit's scene, drawn from the set's domain (None: the
        world draws them); a separate stream, so sets without a domain render as before."""
        rng = np.random.default_rng([self.seed, self.set_index, self.unit, 7])
        weather = str(rng.choice(self.weathers)) if self.weathers else None
        time = str(rng.choice(self.times)) if self.times else None
        return {"weather": weather, "timeofday": time}


def _run_job(job: _Job) -> list[dict[str, Any]]:
    """Render one clip (or one image) and write its files; returns its Scalabel frames as JSON."""
    w, h = job.size
    tasks = set(job.tasks)
    flow = "flow" in tasks
    rng = np.random.default_rng([job.seed, job.set_index, job.unit])
    world = generate_world(
        rng,
        Camera.default(w, h),
        job.frames + (1 if flow else 0),
        people=job.people,
        **job.conditions(),
    )
    root = Path(job.out) / job.set_name
    frames = []
    video = f"vid{job.unit:04d}" if job.video else None
    suffix = ".png" if job.lossless else ".jpg"  # the image format (`write_image`)
    for frame in render_world(world, video=video or "", frames=job.frames, flow=flow):
        name = (
            f"{video}/{video}-{frame.frame_index:07d}{suffix}"
            if video
            else f"img/{job.unit:06d}{suffix}"
        )
        if not job.sensor.identity:  # its own stream per frame: independent noise
            noise_rng = np.random.default_rng([job.seed, job.set_index, job.unit,
                                               frame.frame_index, 11])  # fmt: skip
            frame.image = job.sensor.apply(frame.image, noise_rng)
        write_frame(root, name, frame, tasks)
        frames.append(frame_label(frame, name, tasks, video))
    return frames_to_json(frames)


def _prepare_out(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise SynthError(f"output {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise SynthError(f"output folder {out} is not empty (pass --overwrite to replace it)")
        card = out / CARD_NAME
        if not card.is_file():
            raise SynthError(
                f"output folder {out} is not empty and holds no {CARD_NAME}; "
                "refusing to overwrite a folder this generator did not write"
            )
        old = yaml.safe_load(card.read_text(encoding="utf-8")) or {}
        for name in old.get("sets") or {}:
            if (out / name).is_dir() and "/" not in name and name not in ("", ".", ".."):
                shutil.rmtree(out / name)
        card.unlink()
    out.mkdir(parents=True, exist_ok=True)


def dataset_card(preset: str, seed: int, camera: Camera, sets: dict[str, Any]) -> dict[str, Any]:
    """The `dataset.yaml` content: generator, seed, camera, class lists and image sets."""
    return {
        "generator": {"name": "drivemtl.data.synthetic", "version": GENERATOR_VERSION},
        "preset": preset,
        "seed": seed,
        "fps": FPS,
        "camera": camera.as_dict(),
        "classes": {
            "semantic": list(bdd.SEMANTIC_CLASSES),
            "things": list(bdd.THING_CLASSES),
            "detection": list(bdd.DETECTION_CLASSES_10),
            "drivable": list(bdd.DRIVABLE_CLASSES),
            "lane_categories": list(bdd.LANE_CATEGORIES),
            "pose_joints": list(bdd.POSE_JOINTS),
        },
        "tags": {name: list(values) for name, values in bdd.TAG_ATTRIBUTES.items()},
        "sets": sets,
    }


def generate_dataset(
    out_dir: str | Path,
    preset: str = "bdd-sets",
    num_frames: int = 100,
    size: tuple[int, int] = (640, 360),
    seed: int = 0,
    workers: int = 1,
    overwrite: bool = False,
    progress: bool | Callable[[int, int], None] = True,
) -> Path:
    """Render and write a dataset of about `num_frames` frames with preset `preset`; returns the
    folder. `progress` is True (rich progress bar), False, or a callback(done, total)."""
    if preset not in PRESETS:
        raise SynthError(f"unknown preset {preset!r}; known: {', '.join(PRESETS)}")
    w, h = check_size(size)
    if num_frames < 1:
        raise SynthError(f"num_frames must be >= 1, got {num_frames}")
    if workers < 1:
        raise SynthError(f"workers must be >= 1, got {workers}")
    out = Path(out_dir)
    _prepare_out(out, overwrite)
    jobs: list[_Job] = []
    sets: dict[str, Any] = {}
    for index, (spec, count) in enumerate(set_sizes(preset, num_frames)):
        clip = CLIP_FRAMES if spec.videos else 1
        units = [min(clip, count - start) for start in range(0, count, clip)]
        for unit, frames in enumerate(units):
            jobs.append(
                _Job(
                    str(out),
                    index,
                    spec.name,
                    spec.tasks,
                    unit,
                    frames,
                    spec.videos,
                    (w, h),
                    seed,
                    spec.people,
                    spec.weathers,
                    spec.times,
                    spec.lossless,
                    SensorModel(spec.sensor_blur, spec.sensor_noise),
                )
            )
        sets[spec.name] = {
            "tasks": list(spec.tasks),
            "frames": count,
            "videos": spec.videos,
            "people": spec.people,
            "labels": "labels.json",
            **({"weathers": list(spec.weathers)} if spec.weathers else {}),
            **({"times": list(spec.times)} if spec.times else {}),
        }
    total = sum(job.frames for job in jobs)
    results: list[list[dict[str, Any]]] = []
    with _Progress(progress, total) as bar:
        if workers == 1:
            for job in jobs:
                results.append(_run_job(job))
                bar.advance(job.frames)
        else:
            env_threads = os.environ.get("OMP_NUM_THREADS")
            os.environ["OMP_NUM_THREADS"] = "1"
            try:
                with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
                    for job, frames in zip(jobs, pool.map(_run_job, jobs), strict=True):
                        results.append(frames)
                        bar.advance(job.frames)
            finally:
                if env_threads is None:
                    os.environ.pop("OMP_NUM_THREADS", None)
                else:
                    os.environ["OMP_NUM_THREADS"] = env_threads
    by_set: dict[str, list[dict[str, Any]]] = {name: [] for name in sets}
    for job, frames in zip(jobs, results, strict=True):
        by_set[job.set_name].extend(frames)
    for name, frames in by_set.items():
        _save_json(frames, out / name / "labels.json")
    card = dataset_card(preset, seed, Camera.default(w, h), sets)
    (out / CARD_NAME).write_text(yaml.safe_dump(card, sort_keys=False), encoding="utf-8")
    return out


def _save_json(frames: list[dict[str, Any]], path: Path) -> None:
    from drivemtl.structures.scalabel import parse_frames

    save_frames(parse_frames(frames, path), path)


class _Progress:
    """A rich progress bar, a callback, or nothing."""

    def __init__(self, progress: bool | Callable[[int, int], None], total: int):
        self.callback = progress if callable(progress) else None
        self.enabled = progress is True
        self.total = total
        self.done = 0
        self._bar: Any = None

    def __enter__(self) -> _Progress:
        if self.enabled:
            from rich.progress import Progress

            self._bar = Progress(transient=False)
            self._bar.start()
            self._task = self._bar.add_task("rendering frames", total=self.total)
        return self

    def advance(self, n: int) -> None:
        self.done += n
        if self._bar is not None:
            self._bar.update(self._task, advance=n)
        if self.callback is not None:
            self.callback(self.done, self.total)

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()
