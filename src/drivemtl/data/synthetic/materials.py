"""Surface materials of a synthetic scene: base colour, procedural texture weights, emission."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Palette:
    """A growing table of materials; `add` returns the material index used in the id buffers.

    Texture weights: `noise` (value noise on 0.25 m cells), `windows` (a window grid on facades),
    `stripes` (vertical slats). `emissive` is light added after illumination (lamps, lit windows).
    """

    rgb: list[tuple[float, float, float]] = field(default_factory=list)
    noise: list[float] = field(default_factory=list)
    windows: list[float] = field(default_factory=list)
    stripes: list[float] = field(default_factory=list)
    emissive: list[tuple[float, float, float]] = field(default_factory=list)
    cell: list[float] = field(default_factory=list)

    def add(
        self,
        rgb: tuple[float, float, float] | np.ndarray,
        noise: float = 0.12,
        windows: float = 0.0,
        stripes: float = 0.0,
        emissive: tuple[float, float, float] = (0.0, 0.0, 0.0),
        cell: float = 0.25,
    ) -> int:
        """Register a material (colour in 0..255) and return its index."""
        self.rgb.append(tuple(float(c) for c in rgb))  # type: ignore[arg-type]
        self.noise.append(noise)
        self.windows.append(windows)
        self.stripes.append(stripes)
        self.emissive.append(tuple(float(c) for c in emissive))  # type: ignore[arg-type]
        self.cell.append(cell)
        return len(self.rgb) - 1

    def tables(self) -> dict[str, np.ndarray]:
        """The material table as float32 arrays indexed by material id."""
        return {
            "rgb": np.asarray(self.rgb, dtype=np.float32).reshape(-1, 3),
            "noise": np.asarray(self.noise, dtype=np.float32),
            "windows": np.asarray(self.windows, dtype=np.float32),
            "stripes": np.asarray(self.stripes, dtype=np.float32),
            "emissive": np.asarray(self.emissive, dtype=np.float32).reshape(-1, 3),
            "cell": np.asarray(self.cell, dtype=np.float32),
        }
