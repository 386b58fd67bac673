"""Dataset presets: which image sets to write, with which labels, and how big each one is."""

from __future__ import annotations

from dataclasses import dataclass

ALL_TASKS: tuple[str, ...] = (
    "tagging", "semantic", "drivable", "lanes", "detection", "instance", "pose", "depth",
    "normals", "edges", "mot", "mots", "flow",
)  # fmt: skip
DENSE_TASKS: tuple[str, ...] = ("semantic", "depth", "normals", "edges")  # DenseMTL's set
CLIP_FRAMES = 8  # frames per video clip (1.6 s at 5 fps)


@dataclass(frozen=True)
class SetSpec:
    """One image set: its tasks, its share of `--num-frames`, whether it holds video clips, how
    crowded its streets are (`people`, see `generate_world`) and, for a set that is one domain,
    the weathers / times of day its scenes are drawn from (empty: the default random mix), and
    whether its frames are written losslessly (PNG, for training flow photometrically; see
    `writer.write_image`) rather than as JPEG, and the camera's optics blur / read noise
    (`sensor.SensorModel`; zero: frames as rendered)."""

    name: str
    tasks: tuple[str, ...]
    share: float
    videos: bool
    people: float = 1.0
    weathers: tuple[str, ...] = ()
    times: tuple[str, ...] = ()
    lossless: bool = False
    sensor_blur: float = 0.0
    sensor_noise: float = 0.0


PRESETS: dict[str, tuple[SetSpec, ...]] = {
    "bdd-sets": (
        SetSpec("detection", ("tagging", "detection", "pose", "drivable", "lanes"), 0.5, False),
        SetSpec("segmentation", ("semantic", "instance"), 0.2, False),
        SetSpec("tracking", ("mot", "mots"), 0.3, True),
    ),
    "lv-disjoint-normal": (
        SetSpec("drivable", ("drivable",), 20 / 37, False),
        SetSpec("detection", ("detection",), 10 / 37, False),
        SetSpec("semantic", ("semantic",), 7 / 37, False),
    ),
    "lv-disjoint-balance": (
        SetSpec("drivable", ("drivable",), 1 / 3, False),
        SetSpec("detection", ("detection",), 1 / 3, False),
        SetSpec("semantic", ("semantic",), 1 / 3, False),
    ),
    "lv-full": (SetSpec("full", ("drivable", "detection", "semantic"), 1.0, False),),
    "dense": (SetSpec("dense", DENSE_TASKS, 1.0, False),),
    "all": (SetSpec("all", ALL_TASKS, 1.0, True),),
    # Video clips alone, with BDD100K's tracking labels (boxes with track ids, MOTS masks) and
    # the exact forward flow that BDD100K lacks: what the video-task benchmark trains on.
    # Its frames go through a camera model (PSF 0.8 px, read noise 1.5 grey levels): without it
    # the census loss that trains flow favours zero flow (`sensor`, docs/video_tasks.md).
    "tracking": (
        SetSpec(
            "tracking",
            ("mot", "mots", "flow"),
            1.0,
            True,
            lossless=True,
            sensor_blur=0.8,
            sensor_noise=1.5,
        ),
    ),
    # Two domains for unsupervised domain adaptation (DenseMTL's MTL-UDA): a labelled source of
    # clear daytime scenes and a target of fog, snow and rain at dusk or night. The target is
    # written with labels so that adaptation can be evaluated on it; the `uda_adversarial` stage
    # reads its images only.
    "dense-uda": (
        SetSpec(
            "source",
            DENSE_TASKS,
            0.5,
            False,
            weathers=("clear", "partly cloudy"),
            times=("daytime",),
        ),
        SetSpec(
            "target",
            DENSE_TASKS,
            0.5,
            False,
            weathers=("foggy", "snowy", "rainy"),
            times=("night", "dawn/dusk"),
        ),
    ),
    # What `drivemtl demo` trains on: BDD100K's detection and segmentation image sets, the latter
    # with the dense geometric labels as well (its video clips are preset `tracking`).
    # Its detection set has busier streets, so a 10-minute CPU run sees enough people to learn
    # their boxes and poses (BDD100K's pose images are likewise chosen for their people).
    "demo": (
        SetSpec(
            "detection", ("tagging", "detection", "pose", "drivable", "lanes"), 0.6, False, 3.0
        ),
        SetSpec("segmentation", ("semantic", "instance", "depth", "normals", "edges"), 0.4, False),
    ),
}


def set_sizes(preset: str, num_frames: int) -> list[tuple[SetSpec, int]]:
    """Frames per set for `num_frames` in total (every set gets at least one frame)."""
    specs = PRESETS[preset]
    return [(spec, max(1, round(spec.share * num_frames))) for spec in specs]
