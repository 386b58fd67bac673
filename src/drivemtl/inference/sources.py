"""Frame sources for `drivemtl predict`: one image, a folder, a glob pattern, or a video file."""

from __future__ import annotations

import glob
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from drivemtl.errors import DriveMTLError

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"})
VIDEO_SUFFIXES = frozenset({".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v"})


class SourceError(DriveMTLError):
    """A source that does not exist or cannot be read; the message names the file."""


@dataclass
class SourceFrame:
    """One frame: its name, RGB pixels and position in the source.

    Images are named by their file name; video frames BDD100K-style `<video>-<index + 1:07d>.jpg`.
    """

    name: str
    image: np.ndarray
    index: int
    video: str | None = None


@dataclass
class FrameSource:
    """A resolved source: the image files or the video file, and the video's frame rate."""

    kind: str  # "images" or "video"
    paths: list[Path]
    fps: float = 5.0

    def __len__(self) -> int:
        if self.kind == "images":
            return len(self.paths)
        capture = cv2.VideoCapture(str(self.paths[0]))
        count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        capture.release()
        return max(count, 0)

    def __iter__(self) -> Iterator[SourceFrame]:
        if self.kind == "images":
            for index, path in enumerate(self.paths):
                yield SourceFrame(path.name, read_image(path), index)
            return
        path = self.paths[0]
        capture = cv2.VideoCapture(str(path))
        index = 0
        try:
            while True:
                ok, frame = capture.read()
                if not ok:
                    break
                name = f"{path.stem}-{index + 1:07d}.jpg"
                yield SourceFrame(name, frame[..., ::-1].copy(), index, path.stem)
                index += 1
        finally:
            capture.release()
        if index == 0:
            raise SourceError(f"{path}: no frame could be decoded from this video")


def read_image(path: Path) -> np.ndarray:
    """Read an image file as RGB uint8 (H, W, 3), or raise SourceError naming the file."""
    data = np.fromfile(str(path), dtype=np.uint8) if path.is_file() else None
    if data is None:
        raise SourceError(f"{path}: image file not found")
    image = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if image is None:
        raise SourceError(f"{path}: not a readable image (corrupt or unsupported format)")
    return np.ascontiguousarray(image[..., ::-1])


def open_source(source: str | Path) -> FrameSource:
    """Resolve an image, a folder of images, a glob pattern or a video file into a FrameSource."""
    text = str(source)
    path = Path(text)
    if any(ch in text for ch in "*?[") and not path.exists():
        matches = sorted(Path(p) for p in glob.glob(text, recursive=True))
        images = [p for p in matches if p.suffix.lower() in IMAGE_SUFFIXES]
        if not images:
            raise SourceError(f"{text}: the pattern matches no image file")
        return FrameSource("images", images)
    if not path.exists():
        raise SourceError(
            f"{path}: source does not exist (expected an image, folder, glob or video)"
        )
    if path.is_dir():
        images = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not images:
            raise SourceError(
                f"{path}: folder holds no image file ({', '.join(sorted(IMAGE_SUFFIXES))})"
            )
        return FrameSource("images", images)
    suffix = path.suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        return FrameSource("images", [path])
    if suffix in VIDEO_SUFFIXES:
        capture = cv2.VideoCapture(str(path))
        opened = capture.isOpened()
        fps = float(capture.get(cv2.CAP_PROP_FPS) or 0.0)
        capture.release()
        if not opened:
            raise SourceError(f"{path}: unreadable video (OpenCV could not open it)")
        return FrameSource("video", [path], fps=fps if fps > 0 else 5.0)
    raise SourceError(f"{path}: unsupported file type {suffix!r} (expected an image or a video)")


class VideoWriter:
    """Writes RGB frames to an MP4 file (mp4v codec), sized by the first frame."""

    def __init__(self, path: Path, fps: float) -> None:
        self.path = path
        self.fps = fps
        self._writer: cv2.VideoWriter | None = None

    def write(self, frame: np.ndarray) -> None:
        """Append one RGB frame (all frames must have the first frame's size)."""
        if self._writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            height, width = frame.shape[:2]
            fourcc = cv2.VideoWriter_fourcc(*"mp4v")
            self._writer = cv2.VideoWriter(str(self.path), fourcc, self.fps, (width, height))
            if not self._writer.isOpened():
                raise SourceError(f"{self.path}: cannot open an MP4 writer here")
        self._writer.write(np.ascontiguousarray(frame[..., ::-1]))

    def close(self) -> None:
        """Finish the file."""
        if self._writer is not None:
            self._writer.release()
            self._writer = None
