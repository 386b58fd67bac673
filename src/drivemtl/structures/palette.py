"""Colours for drawing labels and predictions, shared by the data inspector and the overlays (Cityscapes palette for the 19 semantic classes)."""

from __future__ import annotations

import numpy as np

# RGB colours of the 19 semantic classes in `structures.bdd.SEMANTIC_CLASSES` order.
SEMANTIC_PALETTE = np.array(
    [
        (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153),
        (153, 153, 153), (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152),
        (70, 130, 180), (220, 20, 60), (255, 0, 0), (0, 0, 142), (0, 0, 70), (0, 60, 100),
        (0, 80, 100), (0, 0, 230), (119, 11, 32),
    ],
    dtype=np.uint8,
)  # fmt: skip
# Drivable area: direct (ego lane), alternative.
DRIVABLE_PALETTE = np.array([(219, 48, 48), (48, 112, 219)], dtype=np.uint8)
# Lane categories 1..8 (0 = background is never drawn).
LANE_PALETTE = np.array(
    [
        (0, 0, 0), (255, 255, 255), (180, 180, 180), (240, 240, 240), (255, 210, 0),
        (0, 255, 255), (160, 160, 160), (250, 250, 250), (255, 230, 0),
    ],
    dtype=np.uint8,
)  # fmt: skip
# Detection classes (8 things + traffic light, traffic sign).
THING_PALETTE = np.array(
    [
        (220, 20, 60), (255, 0, 0), (0, 0, 142), (0, 0, 70), (0, 60, 100), (0, 80, 100),
        (0, 0, 230), (119, 11, 32), (250, 170, 30), (220, 220, 0),
    ],
    dtype=np.uint8,
)  # fmt: skip


def instance_colour(index: int) -> tuple[int, int, int]:
    """A bright, stable colour for instance / track `index` (golden-ratio hue walk)."""
    hue = (index * 0.618033988749895) % 1.0
    h6 = hue * 6.0
    sector = int(h6) % 6
    f = h6 - int(h6)
    v, s = 1.0, 0.75
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    rgb = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][sector]
    return tuple(int(round(c * 255)) for c in rgb)  # type: ignore[return-value]
