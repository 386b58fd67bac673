"""Frame sources for `drivemtl predict`: one image, a glob pattern, a video file or a folder.

A single image and a glob pattern are still images (no tracking state). A video file is one
video. A folder is read as video frames, in file-name order (numbers compared by value):

- a folder holding image files directly is **one video** named after the folder (its
  sub-folders are then ignored);
- a folder holding no image file directly but sub-folders that do (a BDD100K tracking folder
  such as `images/track/val/`, one sub-folder per video of `<video>-0000001.jpg` ...) is
  **several videos**, one per such sub-folder in name order, each named after its sub-folder
  (deeper folders are not searched).

Frames of a folder are named by their file name, or `<video>/<file name>` when file names repeat
across the sub-folders; their index is their position in the video.
"""

from __future__ import annotations

import glob
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from drivemtl.errors import DriveMTLError

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"})
VIDEO_SUFFIXES = frozenset({".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v"})
FRAME_FOLDER_FPS = 5.0  # frame rate of the MP4 of a folder of frames (BDD100K tracking: 5 fps)


class SourceError(DriveMTLError):
    """A source that does not exist or cannot be read; the message names the file."""


@dataclass
class SourceFrame:
    """One frame: its name, RGB pixels and position in the source.

    Images and folder frames are named by their file name; frames of a video file BDD100K-style
    `<video>-<index + 1:07d>.jpg`. `video` is None for still images.
    """

    name: str
    image: np.ndarray
    index: int
    video: str | None = None


@dataclass
class FrameVideo:
    """One video of a folder source: its name and its frame files in order."""

    name: str
    frames: list[Path]


@dataclass
class FrameSource:
    """A resolved source: still images, a video file, or the videos of a folder of frames.

    kind "images": `paths` are still images; "video": `paths` is the video file; "frames":
    `paths` are the videos' folders and `videos` their frames. `fps`: the MP4 overlay's rate.
    """

    kind: str  # "images", "video" or "frames"
    paths: list[Path]
    fps: float = 5.0
    videos: list[FrameVideo] = field(default_factory=list)

    def __len__(self) -> int:
        if self.kind == "images":
            return len(self.paths)
        if self.kind == "frames":
            return sum(len(v.frames) for v in self.videos)
        capture = cv2.VideoCapture(str(self.paths[0]))
        count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        capture.release()
        return max(count, 0)

    def __iter__(self) -> Iterator[SourceFrame]:
        if self.kind == "images":
            for index, path in enumerate(self.paths):
                yield SourceFrame(path.name, read_image(path), index)
            return
        if self.kind == "frames":
            yield from self._folder_frames()
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

    def _folder_frames(self) -> Iterator[SourceFrame]:
        """Frames of every video of a folder source, video after video, each in order."""
        names = [p.name for v in self.videos for p in v.frames]
        prefixed = len(set(names)) != len(names)  # same file names in two videos
        for video in self.videos:
            for index, path in enumerate(video.frames):
                name = f"{video.name}/{path.name}" if prefixed else path.name
                yield SourceFrame(name, read_image(path), index, video.name)


def read_image(path: Path) -> np.ndarray:
    """Read an image file as RGB uint8 (H, W, 3), or raise SourceError naming the file."""
    data = np.fromfile(str(path), dtype=np.uint8) if path.is_file() else None
    if data is None:
        raise SourceError(f"{path}: image file not found")
    image = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if image is None:
        raise SourceError(f"{path}: not a readable image (corrupt or unsupported format)")
    return np.ascontiguousarray(image[..., ::-1])


def _natural_key(path: Path) -> list[int | str]:
    """Sort key of a file name with its numbers compared by value (`f2` before `f10`)."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.name)]


def _images_in(folder: Path) -> list[Path]:
    """The image files directly in `folder`, in natural file-name order."""
    files = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
    return sorted(files, key=_natural_key)


def folder_source(path: Path) -> FrameSource:
    """A folder as one video (images directly in it) or as one video per sub-folder of images."""
    images = _images_in(path)
    if images:
        return FrameSource("frames", [path], FRAME_FOLDER_FPS, [FrameVideo(path.name, images)])
    folders = sorted((p for p in path.iterdir() if p.is_dir()), key=_natural_key)
    videos = [FrameVideo(f.name, frames) for f in folders if (frames := _images_in(f))]
    if not videos:
        raise SourceError(
            f"{path}: folder holds no image file ({', '.join(sorted(IMAGE_SUFFIXES))}), "
            "directly or in its sub-folders"
        )
    paths = [path / v.name for v in videos]
    return FrameSource("frames", paths, FRAME_FOLDER_FPS, videos)


def open_source(source: str | Path) -> FrameSource:
    """Resolve an image, a glob pattern, a video file or a folder of frames into a FrameSource
    (see the module docstring for how a folder is read)."""
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
        return folder_source(path)
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
    """Writes RGB frames to an MP4 file (mp4v codec), sized by the first frame (a frame of
    another size is resized to it: OpenCV would silently drop it)."""

    def __init__(self, path: Path, fps: float) -> None:
        self.path = path
        self.fps = fps
        self._writer: cv2.VideoWriter | None = None
        self._size = (0, 0)  # (width, height) of the first frame

    def write(self, frame: np.ndarray) -> None:
        """Append one RGB frame."""
        if self._writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            height, width = frame.shape[:2]
            self._size = (width, height)
            fourcc = cv2.VideoWriter_fourcc(*"mp4v")
            self._writer = cv2.VideoWriter(str(self.path), fourcc, self.fps, self._size)
            if not self._writer.isOpened():
                raise SourceError(f"{self.path}: cannot open an MP4 writer here")
        if (frame.shape[1], frame.shape[0]) != self._size:
            frame = cv2.resize(frame, self._size, interpolation=cv2.INTER_AREA)
        self._writer.write(np.ascontiguousarray(frame[..., ::-1]))

    def close(self) -> None:
        """Finish the file."""
        if self._writer is not None:
            self._writer.release()
            self._writer = None
