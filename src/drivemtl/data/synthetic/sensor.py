"""A camera's image formation after the renderer: optics blur (a Gaussian point-spread
function) and sensor read noise (independent per pixel and frame), then 8-bit quantisation.

The renderer's frames are aliased and noise-free: consecutive frames are bit-identical wherever
nothing moved, and any sub-pixel warp of their finest texture blurs it, so a photometric
(census) loss is lower at zero flow than at the true flow along the way to it
(docs/video_tasks.md). A real camera band-limits the image and adds noise; with both the loss
falls from zero flow towards the true one.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class SensorModel:
    """`blur`: the PSF's standard deviation in pixels (0: none); `noise`: the read noise's
    standard deviation in grey levels of 0..255 (0: none)."""

    blur: float = 0.0
    noise: float = 0.0

    def __post_init__(self) -> None:
        if self.blur < 0 or self.noise < 0:
            raise ValueError(f"sensor blur {self.blur} and noise {self.noise} must be >= 0")

    @property
    def identity(self) -> bool:
        """True when the model leaves images as rendered."""
        return self.blur == 0 and self.noise == 0

    def apply(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """[H, W, 3] uint8 RGB through the optics and the sensor (the input is not changed)."""
        if self.identity:
            return image
        out = image.astype(np.float32)
        if self.blur > 0:
            out = cv2.GaussianBlur(out, (0, 0), self.blur, borderType=cv2.BORDER_REFLECT)
        if self.noise > 0:
            out += rng.normal(0.0, self.noise, out.shape).astype(np.float32)
        return np.clip(np.rint(out), 0, 255).astype(np.uint8)
