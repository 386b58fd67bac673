"""Checked image / PNG reading: every failure is a DataError naming the file and the frame."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from drivemtl.data.errors import DataError

cv2.setNumThreads(1)  # the DataLoader's workers give the parallelism


def _read(path: Path, frame: str | None, flags: int, what: str) -> np.ndarray:
    if not path.is_file():
        raise DataError(path, frame, f"{what} not found")
    data = np.fromfile(str(path), dtype=np.uint8)
    image = cv2.imdecode(data, flags) if data.size else None
    if image is None:
        raise DataError(path, frame, f"{what} is corrupt or not an image (cv2 cannot decode it)")
    return image


def read_rgb(path: str | Path, frame: str | None = None) -> np.ndarray:
    """Read a colour image as [H, W, 3] uint8 RGB."""
    image = _read(Path(path), frame, cv2.IMREAD_COLOR, "image")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def read_png(
    path: str | Path,
    frame: str | None = None,
    *,
    dtype: type | None = None,
    channels: int | None = None,
    what: str = "label PNG",
) -> np.ndarray:
    """Read a PNG unchanged ([H, W] or [H, W, C], channels in file order RGB(A), not BGR).

    `dtype` / `channels` are checked when given, so a mask in the wrong encoding fails early.
    """
    path = Path(path)
    image = _read(path, frame, cv2.IMREAD_UNCHANGED, what)
    if image.ndim == 3:
        code = cv2.COLOR_BGRA2RGBA if image.shape[2] == 4 else cv2.COLOR_BGR2RGB
        image = cv2.cvtColor(image, code)
    got_channels = 1 if image.ndim == 2 else image.shape[2]
    if channels is not None and got_channels != channels:
        raise DataError(path, frame, f"{what} has {got_channels} channels, expected {channels}")
    if dtype is not None and image.dtype != dtype:
        raise DataError(path, frame, f"{what} is {image.dtype}, expected {np.dtype(dtype)}")
    return image


def check_size(
    array: np.ndarray, size: tuple[int, int], path: str | Path, frame: str | None, what: str
) -> None:
    """Raise a DataError when a label map's (H, W) differs from its image's."""
    got = tuple(array.shape[:2])
    if got != tuple(size):
        raise DataError(
            path, frame, f"{what} is {got[0]}x{got[1]} but the image is {size[0]}x{size[1]} (HxW)"
        )
