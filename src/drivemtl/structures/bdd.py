"""BDD100K label definitions shared by every layer: class lists, tags, lanes, pose joints.

Orders and ids follow the official BDD100K toolkit configs (`configs/*.toml`), so that ids written
by DriveMTL mean the same as in the official bitmasks and evaluation.
"""

from __future__ import annotations

IGNORE_INDEX = 255

# Semantic segmentation: the 19 Cityscapes-style train classes, ids 0..18; 255 = ignore.
SEMANTIC_CLASSES: tuple[str, ...] = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
    "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train",
    "motorcycle", "bicycle",
)  # fmt: skip

# Detection / tracking / instance segmentation: the 8 thing classes (box_track, seg_track, ins_seg).
THING_CLASSES: tuple[str, ...] = (
    "pedestrian", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle",
)  # fmt: skip
# Detection with the two static object classes as well (det.toml order).
DETECTION_CLASSES_10: tuple[str, ...] = (*THING_CLASSES, "traffic light", "traffic sign")

# Super-categories used by the tracking metrics (mMOTA is averaged over the 8 classes).
SUPER_CATEGORIES: dict[str, tuple[str, ...]] = {
    "human": ("pedestrian", "rider"),
    "vehicle": ("car", "truck", "bus", "train"),
    "bike": ("motorcycle", "bicycle"),
}

# Raw BDD names folded into the canonical ones, and names mapped to ignore regions (det.toml).
NAME_MAPPING: dict[str, str] = {
    "bike": "bicycle", "caravan": "car", "motor": "motorcycle", "person": "pedestrian", "van": "car",
}  # fmt: skip
IGNORED_MAPPING: dict[str, str] = {
    "other person": "pedestrian", "other vehicle": "car", "trailer": "truck",
}  # fmt: skip

# The semantic class that each thing class paints (pedestrian -> person, ...).
THING_TO_SEMANTIC: dict[str, str] = {
    "pedestrian": "person", "rider": "rider", "car": "car", "truck": "truck", "bus": "bus",
    "train": "train", "motorcycle": "motorcycle", "bicycle": "bicycle",
}  # fmt: skip

# Drivable area: bitmask values 0 = direct (ego lane), 1 = alternative, 2 = background.
DRIVABLE_CLASSES: tuple[str, ...] = ("direct", "alternative", "background")

# Frame tags (frame `attributes`); "undefined" is part of the official value lists.
WEATHER: tuple[str, ...] = (
    "rainy", "snowy", "clear", "overcast", "undefined", "partly cloudy", "foggy",
)  # fmt: skip
SCENE: tuple[str, ...] = (
    "tunnel", "residential", "parking lot", "undefined", "city street", "gas stations", "highway",
)  # fmt: skip
TIMEOFDAY: tuple[str, ...] = ("daytime", "night", "dawn/dusk", "undefined")
TAG_ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "weather": WEATHER, "scene": SCENE, "timeofday": TIMEOFDAY,
}  # fmt: skip

# Lanes: category ids 0..7 as in the BDD100K lane bitmask (bits 0-2), direction bit 5, style bit 4.
LANE_CATEGORIES: tuple[str, ...] = (
    "crosswalk", "double other", "double white", "double yellow", "road curb", "single other",
    "single white", "single yellow",
)  # fmt: skip
LANE_DIRECTIONS: tuple[str, ...] = ("parallel", "vertical")
LANE_STYLES: tuple[str, ...] = ("solid", "dashed")
LANE_CATEGORY_BITS = 0b0000_0111
LANE_BACKGROUND_BIT = 0b0000_1000
LANE_STYLE_BIT = 0b0001_0000
LANE_DIRECTION_BIT = 0b0010_0000

# Pose: the 18 BDD100K joints in annotation order, their OKS sigmas, and the skeleton.
POSE_JOINTS: tuple[str, ...] = (
    "head", "neck", "right_shoulder", "right_elbow", "right_wrist", "left_shoulder",
    "left_elbow", "left_wrist", "right_hip", "right_knee", "right_ankle", "left_hip",
    "left_knee", "left_ankle", "right_fingertip", "left_fingertip", "right_toe", "left_toe",
)  # fmt: skip
POSE_SIGMAS: tuple[float, ...] = (
    0.079, 0.079, 0.079, 0.072, 0.062, 0.079, 0.072, 0.062, 0.107, 0.087,
    0.089, 0.107, 0.087, 0.089, 0.062, 0.062, 0.062, 0.062,
)  # fmt: skip
POSE_SKELETON: tuple[tuple[int, int], ...] = (
    (0, 1), (1, 2), (1, 5), (1, 8), (1, 11), (2, 3), (3, 4), (4, 14), (5, 6), (6, 7), (7, 15),
    (8, 9), (9, 10), (10, 16), (11, 12), (12, 13), (13, 17),
)  # fmt: skip


def _flip_pairs() -> tuple[tuple[int, int], ...]:
    pairs = []
    for i, name in enumerate(POSE_JOINTS):
        if name.startswith("left_"):
            pairs.append((i, POSE_JOINTS.index("right_" + name[len("left_") :])))
    return tuple(pairs)


# (left index, right index) pairs swapped by a horizontal flip.
POSE_FLIP_PAIRS: tuple[tuple[int, int], ...] = _flip_pairs()
