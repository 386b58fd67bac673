"""Box-built objects of the synthetic world: vehicles, articulated people (18 BDD joints) and
static street furniture. Every part is an oriented box in its object's frame (y down, +z forward,
origin on the ground under the object's centre)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from drivemtl.data.synthetic.camera import pitch_matrix, rigid, yaw_matrix
from drivemtl.data.synthetic.materials import Palette
from drivemtl.data.synthetic.road import SEM
from drivemtl.structures.bdd import POSE_JOINTS

J = {name: i for i, name in enumerate(POSE_JOINTS)}


@dataclass
class PartSpec:
    """One box: `local` places the box centre in the object frame, `size` = (w, h, l) metres."""

    local: np.ndarray
    size: tuple[float, float, float]
    semantic: int
    material: int


def box(
    center: tuple[float, float, float],
    size: tuple[float, float, float],
    semantic: int,
    material: int,
    yaw: float = 0.0,
) -> PartSpec:
    """A box part centred at `center` (object frame), optionally turned by `yaw`."""
    return PartSpec(rigid(yaw_matrix(yaw), np.asarray(center, float)), size, semantic, material)


def standing(size: tuple[float, float, float], x: float, z: float, sem: int, mat: int) -> PartSpec:
    """A box resting on the ground at (x, z) of the object frame."""
    return box((x, -size[1] / 2, z), size, sem, mat)


# ---------------------------------------------------------------------------------------------
# vehicles
# ---------------------------------------------------------------------------------------------
CAR_COLOURS = (
    (200, 30, 30), (30, 60, 170), (230, 230, 230), (25, 25, 28), (150, 150, 155),
    (40, 120, 60), (200, 160, 40), (110, 20, 30), (80, 160, 200),
)  # fmt: skip


def _lights(pal: Palette, sem: int, w: float, length: float, y: float) -> list[PartSpec]:
    head = pal.add((235, 235, 200), noise=0.0, emissive=(255, 250, 210))
    tail = pal.add((170, 20, 20), noise=0.0, emissive=(255, 40, 30))
    return [
        box((0.0, y, length / 2 + 0.03), (w * 0.85, 0.14, 0.06), sem, head),
        box((0.0, y, -length / 2 - 0.03), (w * 0.85, 0.14, 0.06), sem, tail),
    ]


def _axles(pal: Palette, sem: int, w: float, zs: list[float], r: float) -> list[PartSpec]:
    tyre = pal.add((22, 22, 22), noise=0.05)
    return [box((0.0, -r, z), (w + 0.04, 2 * r, 2 * r), sem, tyre) for z in zs]


def vehicle_parts(
    category: str, rng: np.random.Generator, pal: Palette
) -> tuple[list[PartSpec], float, float]:
    """Parts of a car / truck / bus / train / motorcycle / bicycle and its (length, width)."""
    sem = SEM[{"pedestrian": "person"}.get(category, category)]
    if category == "car":
        length, w, h = rng.uniform(4.0, 4.9), rng.uniform(1.7, 1.9), rng.uniform(1.4, 1.65)
        paint = pal.add(CAR_COLOURS[rng.integers(len(CAR_COLOURS))], noise=0.05)
        glass = pal.add((45, 55, 70), noise=0.03)
        parts = [
            box((0.0, -0.6, 0.0), (w, 0.7, length), sem, paint),
            box(
                (0.0, -(0.95 + h) / 2, -0.1 * length),
                (w * 0.88, h - 0.95, length * 0.52),
                sem,
                glass,
            ),
            *_axles(pal, sem, w - 0.1, [0.32 * length, -0.32 * length], 0.32),
            *_lights(pal, sem, w, length, -0.75),
        ]
        return parts, length, w
    if category == "truck":
        length, w = rng.uniform(7.0, 10.0), 2.5
        cab_l = 2.2
        cab = pal.add(CAR_COLOURS[rng.integers(len(CAR_COLOURS))], noise=0.05)
        cargo = pal.add(
            rng.choice([(235, 235, 230), (180, 180, 175), (150, 40, 30)]), noise=0.08, stripes=0.08
        )
        parts = [
            box((0.0, -1.6, length / 2 - cab_l / 2), (w, 2.6, cab_l), sem, cab),
            box((0.0, -2.25, -cab_l / 2), (w, 3.3, length - cab_l - 0.2), sem, cargo),
            *_axles(
                pal, sem, w - 0.1, [length / 2 - 1.2, -length / 2 + 1.5, -length / 2 + 2.8], 0.5
            ),
            *_lights(pal, sem, w, length, -0.8),
        ]
        return parts, length, w
    if category == "bus":
        length, w = rng.uniform(10.5, 12.5), 2.55
        body = pal.add(
            rng.choice([(230, 190, 30), (200, 40, 35), (40, 90, 180)]),
            noise=0.04,
            windows=0.5,
            cell=0.5,
        )
        parts = [
            box((0.0, -1.85, 0.0), (w, 2.9, length), sem, body),
            *_axles(pal, sem, w - 0.1, [length / 2 - 2.2, -length / 2 + 2.8], 0.5),
            *_lights(pal, sem, w, length, -0.8),
        ]
        return parts, length, w
    if category == "train":
        car_l, w = 14.0, 2.8
        body = pal.add(
            rng.choice([(200, 200, 210), (60, 110, 190), (220, 120, 40)]), noise=0.04, windows=0.55
        )
        parts = []
        for z in (car_l / 2 + 0.4, -car_l / 2 - 0.4):
            parts.append(box((0.0, -2.2, z), (w, 3.4, car_l), sem, body))
            parts += _axles(pal, sem, w - 0.2, [z + car_l / 2 - 2.0, z - car_l / 2 + 2.0], 0.45)
        parts += _lights(pal, sem, w, 2 * car_l + 0.8, -1.2)
        return parts, 2 * car_l + 0.8, w
    if category == "motorcycle":
        length, w = rng.uniform(1.9, 2.2), 0.5
        body = pal.add(CAR_COLOURS[rng.integers(len(CAR_COLOURS))], noise=0.05)
        tyre = pal.add((20, 20, 20), noise=0.05)
        parts = [
            box((0.0, -0.75, 0.0), (0.45, 0.55, length * 0.75), sem, body),
            box((0.0, -0.33, length / 2 - 0.33), (0.14, 0.66, 0.66), sem, tyre),
            box((0.0, -0.33, -length / 2 + 0.33), (0.14, 0.66, 0.66), sem, tyre),
            box((0.0, -1.1, length / 2 - 0.45), (0.7, 0.06, 0.06), sem, body),
        ]
        return parts, length, w
    if category == "bicycle":
        length, w = 1.75, 0.5
        frame = pal.add(CAR_COLOURS[rng.integers(len(CAR_COLOURS))], noise=0.03)
        tyre = pal.add((15, 15, 15), noise=0.03)
        parts = [
            box((0.0, -0.72, 0.0), (0.07, 0.35, 1.0), sem, frame),
            box((0.0, -0.35, 0.55), (0.06, 0.7, 0.7), sem, tyre),
            box((0.0, -0.35, -0.55), (0.06, 0.7, 0.7), sem, tyre),
            box((0.0, -1.0, 0.45), (0.55, 0.05, 0.06), sem, frame),
        ]
        return parts, length, w
    raise ValueError(f"no vehicle model for category {category!r}")


# ---------------------------------------------------------------------------------------------
# articulated people
# ---------------------------------------------------------------------------------------------
def _swing(angle: float, length: float) -> np.ndarray:
    """A limb of `length` hanging down, swung forward (+z) by `angle` radians about the x axis."""
    return np.array([0.0, np.cos(angle) * length, np.sin(angle) * length])


def person_joints(height: float, phase: float, riding: bool = False) -> np.ndarray:
    """The 18 BDD joints [18, 3] of a person in its own frame, walking (or pedalling) at `phase`."""
    k = height / 1.75
    joints = np.zeros((18, 3))
    hip_y = -0.95 * k
    lean = 0.35 if riding else 0.0
    up = np.array([0.0, -np.cos(lean), np.sin(lean)])
    hip_c = np.array([0.0, hip_y, -0.1 * k if riding else 0.0])
    if riding:
        hip_c[1] = -1.0 * k
    neck = hip_c + up * 0.5 * k
    joints[J["neck"]] = neck
    joints[J["head"]] = neck + up * 0.14 * k
    for side, sx in (("right", 1.0), ("left", -1.0)):
        hip = hip_c + np.array([sx * 0.1 * k, 0.0, 0.0])
        sh = neck + np.array([sx * 0.19 * k, 0.05 * k, 0.0])
        s = np.sin(phase) * (1.0 if side == "right" else -1.0)
        if riding:
            thigh, shin = 1.0 + 0.35 * s, 0.15 - 0.25 * s
            upper, fore = 1.0, 1.25
        else:
            thigh, shin = 0.42 * s, 0.42 * s - 0.35 * max(0.0, -s)
            upper, fore = -0.35 * s, -0.35 * s + 0.3
        knee = hip + _swing(thigh, 0.45 * k)
        ankle = knee + _swing(shin, 0.42 * k)
        elbow = sh + _swing(upper, 0.29 * k)
        wrist = elbow + _swing(fore, 0.26 * k)
        finger = wrist + _swing(fore, 0.09 * k)
        toe = ankle + np.array([0.0, 0.04 * k, 0.15 * k])
        for name, point in (
            ("shoulder", sh),
            ("elbow", elbow),
            ("wrist", wrist),
            ("hip", hip),
            ("knee", knee),
            ("ankle", ankle),
            ("fingertip", finger),
            ("toe", toe),
        ):
            joints[J[f"{side}_{name}"]] = point
    if not riding:  # keep the lower foot on the ground
        joints[:, 1] -= max(joints[J["right_toe"], 1], joints[J["left_toe"], 1]) + 0.0
    return joints


# (from joint, to joint, thickness x, thickness z, extension past the end joint)
LIMBS: tuple[tuple[str, str, float, float, float], ...] = (
    ("neck", "_hips", 0.36, 0.2, 0.02),
    ("right_shoulder", "right_elbow", 0.1, 0.1, 0.03), ("right_elbow", "right_wrist", 0.08, 0.08, 0.0),
    ("right_wrist", "right_fingertip", 0.07, 0.05, 0.04),
    ("left_shoulder", "left_elbow", 0.1, 0.1, 0.03), ("left_elbow", "left_wrist", 0.08, 0.08, 0.0),
    ("left_wrist", "left_fingertip", 0.07, 0.05, 0.04),
    ("right_hip", "right_knee", 0.15, 0.15, 0.0), ("right_knee", "right_ankle", 0.11, 0.11, 0.0),
    ("right_ankle", "right_toe", 0.1, 0.08, 0.05),
    ("left_hip", "left_knee", 0.15, 0.15, 0.0), ("left_knee", "left_ankle", 0.11, 0.11, 0.0),
    ("left_ankle", "left_toe", 0.1, 0.08, 0.05),
)  # fmt: skip


_LIMB_FROM = np.array([J[a] for a, *_ in LIMBS])
_LIMB_TO = np.array([0 if b == "_hips" else J[b] for _, b, *_ in LIMBS])
_LIMB_TO_HIPS = np.array([b == "_hips" for _, b, *_ in LIMBS])
_LIMB_EXT = np.array([ext for *_, ext in LIMBS])


def person_materials(rng: np.random.Generator, pal: Palette) -> list[int]:
    """Skin, shirt and trousers materials of one person; index order follows `limb_boxes`."""
    skin = pal.add(rng.choice([(225, 190, 160), (160, 110, 80), (95, 65, 45)]), noise=0.03)
    shirt = pal.add(rng.integers(20, 240, 3), noise=0.06)
    legs = pal.add(
        rng.choice([(40, 45, 80), (30, 30, 30), (110, 95, 70), (90, 90, 95)]), noise=0.05
    )
    return [skin, shirt, shirt, shirt, skin, shirt, shirt, skin, legs, legs, legs, legs, legs, legs]


def limb_boxes(
    joints: np.ndarray, height: float
) -> list[tuple[np.ndarray, tuple[float, float, float]]]:
    """Local transforms and sizes of the 14 body boxes (head, torso, arms, legs) for `joints`."""
    k = height / 1.75
    hips = (joints[J["right_hip"]] + joints[J["left_hip"]]) / 2
    up = joints[J["head"]] - joints[J["neck"]]
    up /= np.linalg.norm(up)
    tilt = np.arctan2(up[2], -up[1])
    head_size = (0.19 * k, 0.25 * k, 0.21 * k)
    out = [(rigid(pitch_matrix(tilt), joints[J["head"]]), head_size)]
    # all limbs at once: a -> b axis, unit y along it, x = +x orthogonalised against y, z = x X y
    ext = _LIMB_EXT
    a = joints[_LIMB_FROM]
    b = joints[_LIMB_TO]
    b[_LIMB_TO_HIPS] = hips
    axis = b - a
    length = np.sqrt(axis[:, 0] * axis[:, 0] + axis[:, 1] * axis[:, 1] + axis[:, 2] * axis[:, 2])
    y = axis / length[:, None]
    x = -y[:, :1] * y
    x[:, 0] += 1.0
    x /= np.sqrt(x[:, 0] * x[:, 0] + x[:, 1] * x[:, 1] + x[:, 2] * x[:, 2])[:, None]
    z = np.empty_like(x)
    z[:, 0] = x[:, 1] * y[:, 2] - x[:, 2] * y[:, 1]
    z[:, 1] = x[:, 2] * y[:, 0] - x[:, 0] * y[:, 2]
    z[:, 2] = x[:, 0] * y[:, 1] - x[:, 1] * y[:, 0]
    transforms = np.zeros((len(LIMBS), 4, 4))
    transforms[:, :3, 0] = x
    transforms[:, :3, 1] = y
    transforms[:, :3, 2] = z
    transforms[:, :3, 3] = a + y * ((length + ext) / 2)[:, None]
    transforms[:, 3, 3] = 1.0
    for i, (_, _, tx, tz, _) in enumerate(LIMBS):
        out.append((transforms[i], (tx * k, float(length[i] + ext[i]), tz * k)))
    return out


# ---------------------------------------------------------------------------------------------
# static street furniture
# ---------------------------------------------------------------------------------------------
def traffic_light_parts(
    pal: Palette, rng: np.random.Generator, height: float = 4.0
) -> tuple[list[PartSpec], list[PartSpec]]:
    """(pole parts, light parts): a pole with a three-lamp housing facing -z."""
    pole_mat = pal.add((90, 92, 95), noise=0.04)
    housing = pal.add((30, 32, 30), noise=0.03)
    lit = int(rng.integers(3))
    colours = ((255, 40, 30), (255, 190, 20), (40, 255, 90))
    pole = [standing((0.14, height, 0.14), 0.0, 0.0, SEM["pole"], pole_mat)]
    light = [box((0.0, -height - 0.5, 0.0), (0.38, 1.0, 0.32), SEM["traffic light"], housing)]
    for i, colour in enumerate(colours):
        on = i == lit
        lamp = pal.add(
            tuple(c * (0.9 if on else 0.25) for c in colour),
            noise=0.0,
            emissive=colour if on else (0, 0, 0),
        )
        light.append(
            box(
                (0.0, -height - 0.82 + 0.31 * i, -0.18),
                (0.22, 0.22, 0.04),
                SEM["traffic light"],
                lamp,
            )
        )
    return pole, light


def sign_parts(
    pal: Palette, rng: np.random.Generator, large: bool = False
) -> tuple[list[PartSpec], list[PartSpec]]:
    """(pole parts, sign parts): a sign panel facing -z on one pole (two when large)."""
    pole_mat = pal.add((110, 112, 115), noise=0.04)
    if large:
        panel = pal.add((20, 110, 50), noise=0.03, stripes=0.15)
        poles = [standing((0.2, 5.0, 0.2), x, 0.0, SEM["pole"], pole_mat) for x in (-1.8, 1.8)]
        return poles, [box((0.0, -5.8, -0.12), (4.4, 1.8, 0.1), SEM["traffic sign"], panel)]
    colour = [(200, 20, 25), (20, 70, 180), (240, 240, 235), (240, 200, 20)][rng.integers(4)]
    panel = pal.add(colour, noise=0.03, stripes=0.2)
    return [standing((0.1, 2.6, 0.1), 0.0, 0.0, SEM["pole"], pole_mat)], [
        box((0.0, -2.9, -0.07), (0.75, 0.75, 0.06), SEM["traffic sign"], panel)
    ]


def tree_parts(pal: Palette, rng: np.random.Generator) -> list[PartSpec]:
    """A trunk with two offset crowns (vegetation)."""
    trunk = pal.add((90, 65, 40), noise=0.1)
    leaves = pal.add((40 + rng.integers(30), 110 + rng.integers(50), 35), noise=0.35, cell=0.3)
    h = rng.uniform(4.0, 8.0)
    c = rng.uniform(2.0, 4.0)
    return [
        standing((0.3, h * 0.5, 0.3), 0.0, 0.0, SEM["vegetation"], trunk),
        box((0.0, -h * 0.68, 0.0), (c, h * 0.5, c), SEM["vegetation"], leaves),
        box(
            (0.0, -h * 0.85, 0.0), (c * 0.7, h * 0.35, c * 0.7), SEM["vegetation"], leaves, yaw=0.7
        ),
    ]
