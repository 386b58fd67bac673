"""Label-consistent augmentation: every transform updates the image and every target type together.

Transforms are callables `Sample -> Sample`. Random parameters are drawn once per call and applied
to the sample and to its reference frame alike, so key / reference pairs stay aligned. Randomness
comes from Python's `random`, which PyTorch seeds per DataLoader worker.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import replace

import torch
import torch.nn.functional as F
from torch import Tensor

from drivemtl.data.config import TransformConfig
from drivemtl.structures.bdd import POSE_FLIP_PAIRS
from drivemtl.structures.fields import DataField, fields_of_kind
from drivemtl.structures.instances import Instances
from drivemtl.structures.sample import LaneLine, Sample

Transform = Callable[[Sample], Sample]
IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)


def _every_frame(sample: Sample, fn: Callable[[Sample], None]) -> Sample:
    """Apply `fn` to the key frame and each reference frame of the clip (one random draw)."""
    for frame in sample.clip:
        fn(frame)
    return sample


def _resize_nearest(x: Tensor, size: tuple[int, int]) -> Tensor:
    """Nearest-neighbour resize of [H, W] or [C, H, W] maps of any dtype (pixel-centre sampling)."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    squeeze = x.ndim == 2
    y = x[None, None] if squeeze else x[None]
    dtype = y.dtype
    work = y.to(torch.float32) if dtype in (torch.bool, torch.int64, torch.uint8) else y
    out = F.interpolate(work, size=size, mode="nearest-exact")
    out = out.to(dtype) if dtype != torch.bool else out > 0.5
    return out[0, 0] if squeeze else out[0]


class Compose:
    """Apply transforms in order."""

    def __init__(self, transforms: Sequence[Transform]) -> None:
        self.transforms = list(transforms)

    def __call__(self, sample: Sample) -> Sample:
        for transform in self.transforms:
            sample = transform(sample)
        return sample

    def __repr__(self) -> str:
        return f"Compose({self.transforms})"


class Resize:
    """Keep-aspect resize to a height chosen from `heights` (at random when training).

    Images are bilinear; class maps, depth, normals, masks and flow are nearest; flow vectors are
    multiplied by the scale; boxes, keypoints and lane vertices are scaled.
    """

    def __init__(
        self, heights: Sequence[int], max_width: int | None = None, random_choice: bool = True
    ) -> None:
        if not heights:
            raise ValueError("Resize needs at least one height")
        self.heights = list(heights)
        self.max_width = max_width
        self.random_choice = random_choice

    def target_size(self, size: tuple[int, int], height: int) -> tuple[int, int]:
        """(H, W) after resizing an image of `size` to `height`, keeping the aspect ratio."""
        h, w = size
        scale = height / h
        if self.max_width is not None and w * scale > self.max_width:
            scale = self.max_width / w
        return max(1, round(h * scale)), max(1, round(w * scale))

    def __call__(self, sample: Sample) -> Sample:
        height = random.choice(self.heights) if self.random_choice else self.heights[0]
        new = self.target_size(sample.size, height)
        return _every_frame(sample, lambda s: resize_sample(s, new))

    def __repr__(self) -> str:
        return f"Resize(heights={self.heights}, max_width={self.max_width})"


def _resize_field(
    value: Tensor, spec: DataField, new: tuple[int, int], scale: tuple[float, float]
) -> Tensor:
    """One dense map resized by its declaration (nearest or bilinear; pixel vectors scaled)."""
    if spec.resize == "bilinear":
        x = value[None, None] if value.ndim == 2 else value[None]
        out = F.interpolate(x.float(), size=new, mode="bilinear", align_corners=False)
        out = (out[0, 0] if value.ndim == 2 else out[0]).to(value.dtype)
    else:
        out = _resize_nearest(value, new)
    if spec.scale_with_size:
        out = out * torch.tensor(scale, dtype=out.dtype)[:, None, None]
    return out


def resize_sample(s: Sample, new: tuple[int, int]) -> None:
    """Resize one sample in place to `new` = (H, W) (see `Resize`)."""
    h, w = s.size
    if (h, w) == tuple(new):
        return
    sy, sx = new[0] / h, new[1] / w
    s.image = F.interpolate(s.image[None], size=new, mode="bilinear", align_corners=False)[0]
    for spec in fields_of_kind("dense"):
        value = s.get(spec.name)
        if value is not None:
            s.set(spec.name, _resize_field(value, spec, new, (sx, sy)))
    if s.instances is not None:
        inst = s.instances
        inst.boxes = inst.boxes * torch.tensor([sx, sy, sx, sy], dtype=inst.boxes.dtype)
        if inst.masks is not None:
            inst.masks = (
                _resize_nearest(inst.masks, new)
                if len(inst)
                else torch.zeros((0, *new), dtype=torch.bool)
            )
        if inst.keypoints is not None:
            inst.keypoints = inst.keypoints.clone()
            inst.keypoints[..., 0] *= sx
            inst.keypoints[..., 1] *= sy
    if s.lane_lines is not None:
        scale = torch.tensor([sx, sy])
        s.lane_lines = [replace(line, vertices=line.vertices * scale) for line in s.lane_lines]
    oy, ox = s.meta.scale
    s.meta.scale = (oy * sy, ox * sx)
    s.meta.image_size = tuple(new)  # type: ignore[assignment]


class RandomCrop:
    """Random (H, W) crop (smaller images keep their size along that side). Boxes are shifted and
    clipped; instances left with an empty box (or empty mask) are dropped; keypoints outside become
    absent."""

    def __init__(self, size: tuple[int, int]) -> None:
        self.size = (int(size[0]), int(size[1]))

    def __call__(self, sample: Sample) -> Sample:
        h, w = sample.size
        ch, cw = min(self.size[0], h), min(self.size[1], w)
        y0 = random.randint(0, h - ch)
        x0 = random.randint(0, w - cw)
        return _every_frame(sample, lambda s: crop_sample(s, y0, x0, ch, cw))

    def __repr__(self) -> str:
        return f"RandomCrop({self.size})"


def crop_sample(s: Sample, y0: int, x0: int, ch: int, cw: int) -> None:
    """Crop one sample in place to rows y0..y0+ch, columns x0..x0+cw (see `RandomCrop`)."""
    s.image = s.image[:, y0 : y0 + ch, x0 : x0 + cw].contiguous()
    for spec in fields_of_kind("dense"):
        value = s.get(spec.name)
        if value is not None:
            s.set(spec.name, value[..., y0 : y0 + ch, x0 : x0 + cw].contiguous())
    if s.instances is not None:
        s.instances = _crop_instances(s.instances, y0, x0, ch, cw)
    if s.lane_lines is not None:
        shift = torch.tensor([x0, y0], dtype=torch.float32)
        lines = [replace(line, vertices=line.vertices - shift) for line in s.lane_lines]
        s.lane_lines = [line for line in lines if _line_visible(line, ch, cw)]
    py, px = s.meta.crop
    s.meta.crop = (py + y0, px + x0)
    s.meta.image_size = (ch, cw)


def _line_visible(line: LaneLine, h: int, w: int) -> bool:
    v = line.vertices
    return bool(((v[:, 0] >= 0) & (v[:, 0] <= w) & (v[:, 1] >= 0) & (v[:, 1] <= h)).any())


def _crop_instances(inst: Instances, y0: int, x0: int, ch: int, cw: int) -> Instances:
    boxes = inst.boxes - torch.tensor([x0, y0, x0, y0], dtype=inst.boxes.dtype)
    boxes[:, 0::2] = boxes[:, 0::2].clamp(0, cw)
    boxes[:, 1::2] = boxes[:, 1::2].clamp(0, ch)
    inst.boxes = boxes
    keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    if inst.masks is not None:
        had_pixels = inst.masks.flatten(1).any(1)
        inst.masks = inst.masks[:, y0 : y0 + ch, x0 : x0 + cw]
        keep &= inst.masks.flatten(1).any(1) | ~had_pixels
    if inst.keypoints is not None:
        kp = inst.keypoints.clone()
        kp[..., 0] -= x0
        kp[..., 1] -= y0
        outside = (kp[..., 0] < 0) | (kp[..., 0] > cw) | (kp[..., 1] < 0) | (kp[..., 1] > ch)
        kp[outside] = 0.0
        inst.keypoints = kp
    return inst[keep]


class RandomFlip:
    """Horizontal flip with probability `p`: mirrors every map, negates flow-x and normal-x, mirrors
    boxes, masks, lane lines and keypoints, and swaps left / right joints."""

    def __init__(self, p: float = 0.5) -> None:
        self.p = p

    def __call__(self, sample: Sample) -> Sample:
        if random.random() >= self.p:
            return sample
        return _every_frame(sample, flip_sample)

    def __repr__(self) -> str:
        return f"RandomFlip(p={self.p})"


def _flip_field(value: Tensor, spec: DataField) -> Tensor:
    """One dense map mirrored left-right; `negate_x` fields also negate channel 0 (x)."""
    out = value.flip(-1)
    if spec.flip == "negate_x":
        out = out.clone()
        out[0] = -out[0]
    return out


def flip_sample(s: Sample) -> None:
    """Mirror one sample in place (x -> W - x in continuous pixel coordinates)."""
    w = s.size[1]
    s.image = s.image.flip(-1)
    for spec in fields_of_kind("dense"):
        value = s.get(spec.name)
        if value is not None and spec.flip != "none":
            s.set(spec.name, _flip_field(value, spec))
    if s.instances is not None:
        inst = s.instances
        boxes = inst.boxes.clone()
        boxes[:, 0], boxes[:, 2] = w - inst.boxes[:, 2], w - inst.boxes[:, 0]
        inst.boxes = boxes
        if inst.masks is not None:
            inst.masks = inst.masks.flip(-1)
        if inst.keypoints is not None:
            kp = inst.keypoints.clone()
            present = kp[..., 2] > 0
            kp[..., 0] = torch.where(present, w - kp[..., 0], kp[..., 0])
            if kp.shape[1] > 0:
                order = list(range(kp.shape[1]))
                for left, right in POSE_FLIP_PAIRS:
                    order[left], order[right] = right, left
                kp = kp[:, order]
            inst.keypoints = kp
    if s.lane_lines is not None:
        flipped = []
        for line in s.lane_lines:
            v = line.vertices.clone()
            v[:, 0] = w - v[:, 0]
            flipped.append(replace(line, vertices=v))
        s.lane_lines = flipped
    s.meta.flipped = not s.meta.flipped


class PhotometricDistortion:
    """Random brightness, contrast, saturation and hue (each with probability 1/2), the same for a
    key frame and its reference; the image stays in 0..255."""

    def __init__(
        self,
        brightness: float = 32.0,
        contrast: tuple[float, float] = (0.5, 1.5),
        saturation: tuple[float, float] = (0.5, 1.5),
        hue_degrees: float = 18.0,
    ) -> None:
        self.brightness = brightness
        self.contrast = contrast
        self.saturation = saturation
        self.hue_degrees = hue_degrees

    def __call__(self, sample: Sample) -> Sample:
        params = {
            "brightness": random.uniform(-self.brightness, self.brightness)
            if random.random() < 0.5
            else 0.0,
            "contrast": random.uniform(*self.contrast) if random.random() < 0.5 else 1.0,
            "saturation": random.uniform(*self.saturation) if random.random() < 0.5 else 1.0,
            "hue": random.uniform(-self.hue_degrees, self.hue_degrees)
            if random.random() < 0.5
            else 0.0,
        }
        return _every_frame(sample, lambda s: self.apply(s, **params))

    @staticmethod
    def apply(s: Sample, brightness: float, contrast: float, saturation: float, hue: float) -> None:
        """Apply fixed photometric parameters to one sample's image."""
        img = s.image + brightness
        img = (img - img.mean()) * contrast + img.mean()
        gray = (0.299 * img[0] + 0.587 * img[1] + 0.114 * img[2])[None]
        img = gray + (img - gray) * saturation
        if hue:
            img = _rotate_hue(img, math.radians(hue))
        s.image = img.clamp(0.0, 255.0)

    def __repr__(self) -> str:
        return "PhotometricDistortion()"


_RGB_TO_YIQ = torch.tensor(
    [[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]], dtype=torch.float32
)


def _rotate_hue(img: Tensor, angle: float) -> Tensor:
    c, s = math.cos(angle), math.sin(angle)
    rot = torch.tensor([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])
    m = torch.linalg.inv(_RGB_TO_YIQ) @ rot @ _RGB_TO_YIQ
    return torch.einsum("ij,jhw->ihw", m.to(img.dtype), img)


class Normalize:
    """(image - mean) / std per channel (ImageNet statistics in 0..255 units by default)."""

    def __init__(
        self, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD
    ) -> None:
        self.mean = torch.tensor(mean, dtype=torch.float32)[:, None, None]
        self.std = torch.tensor(std, dtype=torch.float32)[:, None, None]

    def __call__(self, sample: Sample) -> Sample:
        def apply(s: Sample) -> None:
            s.image = (s.image - self.mean) / self.std

        return _every_frame(sample, apply)

    def __repr__(self) -> str:
        return "Normalize()"


def build_transforms(cfg: TransformConfig, train: bool) -> Compose:
    """Training: multi-scale resize, crop, flip, photometric, normalise; eval: resize, normalise."""
    transforms: list[Transform] = []
    if cfg.resize:
        if train:
            transforms.append(Resize(cfg.heights, cfg.max_width, random_choice=True))
        else:
            height = cfg.test_height or cfg.heights[0]
            transforms.append(Resize([height], cfg.max_width, random_choice=False))
    if train:
        if cfg.crop is not None:
            transforms.append(RandomCrop(cfg.crop))
        if cfg.flip > 0:
            transforms.append(RandomFlip(cfg.flip))
        if cfg.photometric:
            transforms.append(PhotometricDistortion())
    if cfg.normalize:
        transforms.append(Normalize(cfg.mean, cfg.std))
    return Compose(transforms)
