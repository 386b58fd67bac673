"""Draw every predicted task onto a frame in one overlay (VTDNet-figure style), or as panels."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import cv2
import numpy as np
from torch import Tensor

from drivemtl.structures.bdd import (
    DETECTION_CLASSES_10,
    DRIVABLE_CLASSES,
    LANE_CATEGORIES,
    POSE_SKELETON,
    SEMANTIC_CLASSES,
    TAG_ATTRIBUTES,
)
from drivemtl.structures.fields import FIELDS
from drivemtl.structures.instances import Instances
from drivemtl.structures.palette import (
    DRIVABLE_PALETTE,
    LANE_PALETTE,
    SEMANTIC_PALETTE,
    THING_PALETTE,
    instance_colour,
)
from drivemtl.structures.predictions import FramePrediction


def _np(value: Tensor | np.ndarray) -> np.ndarray:
    return value.detach().cpu().numpy() if isinstance(value, Tensor) else np.asarray(value)


def _blend(canvas: np.ndarray, mask: np.ndarray, colour: np.ndarray, alpha: float) -> None:
    """In place: canvas[mask] = (1 - alpha) * canvas[mask] + alpha * colour."""
    if mask.any():
        mixed = (1.0 - alpha) * canvas[mask].astype(np.float32) + alpha * colour.astype(np.float32)
        canvas[mask] = np.clip(mixed, 0, 255).astype(np.uint8)


def _check_size(image: np.ndarray, value: np.ndarray, what: str) -> None:
    if value.shape[-2:] != image.shape[:2]:
        raise ValueError(f"{what} is {value.shape[-2:]}, image is {image.shape[:2]}")


def draw_class_map(
    canvas: np.ndarray, labels: np.ndarray, palette: np.ndarray, alpha: float, skip: Sequence[int]
) -> None:
    """Blend a per-pixel class map into the canvas; ids in `skip` or outside the palette stay."""
    _check_size(canvas, labels, "class map")
    colours = np.zeros((*labels.shape, 3), dtype=np.uint8)
    valid = (labels >= 0) & (labels < len(palette))
    for value in skip:
        valid &= labels != value
    colours[valid] = palette[labels[valid]]
    _blend(canvas, valid, colours[valid], alpha)


def draw_instances(
    canvas: np.ndarray,
    instances: Instances,
    class_names: Sequence[str] = DETECTION_CLASSES_10,
    score_threshold: float = 0.0,
    keypoint_threshold: float = 0.2,
    with_boxes: bool = True,
    scale: int = 1,
) -> None:
    """Masks (tinted, outlined), boxes with class and score, and pose skeletons, in place.

    `canvas` is the frame upscaled `scale` times: masks are tinted at their own resolution
    (each mask pixel a `scale` x `scale` block), boxes, outlines, labels and joints are drawn
    at the canvas's, so the text stays readable on small frames.
    """
    boxes = _np(instances.boxes)
    classes = _np(instances.classes).astype(int)
    scores = _np(instances.scores) if instances.scores is not None else np.ones(len(boxes))
    track_ids = _np(instances.track_ids) if instances.track_ids is not None else None
    masks = _np(instances.masks) if instances.masks is not None else None
    keypoints = _np(instances.keypoints) if instances.keypoints is not None else None
    thickness = max(1, round(min(canvas.shape[:2]) / 300))
    for i in np.argsort(scores, kind="stable"):
        if scores[i] < score_threshold:
            continue
        ident = int(track_ids[i]) if track_ids is not None and track_ids[i] >= 0 else int(i)
        cls = int(classes[i])
        colour = tuple(int(c) for c in THING_PALETTE[cls % len(THING_PALETTE)])
        if masks is not None and len(masks):
            _draw_mask(canvas, masks[i].astype(bool), instance_colour(ident), scale, thickness)
        if with_boxes:
            x1, y1, x2, y2 = (int(round(v * scale)) for v in boxes[i])
            cv2.rectangle(canvas, (x1, y1), (x2, y2), colour, thickness)
            name = class_names[cls] if 0 <= cls < len(class_names) else str(cls)
            text = f"{name} {scores[i]:.2f}" if instances.scores is not None else name
            if track_ids is not None and track_ids[i] >= 0:
                text = f"#{int(track_ids[i])} {text}"
            _label(canvas, text, (x1, max(y1, 0)), colour)
        if keypoints is not None and len(keypoints):
            joints = keypoints[i] * np.array([scale, scale, 1.0], dtype=np.float32)
            _draw_skeleton(canvas, joints, keypoint_threshold, thickness)


def _draw_mask(
    canvas: np.ndarray, mask: np.ndarray, tint: tuple[int, int, int], scale: int, thickness: int
) -> None:
    """Tint `mask` (frame resolution) into the `scale`-times canvas and outline it."""
    _blend(canvas, upscale(mask, scale), np.array(tint, dtype=np.uint8), 0.45)
    contours, _ = cv2.findContours(
        mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE
    )
    contours = [c * scale + scale // 2 for c in contours]
    cv2.drawContours(canvas, contours, -1, tint, thickness)


def _text_scale(canvas: np.ndarray) -> float:
    return max(0.35, canvas.shape[0] / 1100)


def _label(canvas: np.ndarray, text: str, corner: tuple[int, int], colour: tuple[int, ...]) -> None:
    scale = _text_scale(canvas)
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    x, y = corner
    y_top = max(0, y - th - base - 2)
    cv2.rectangle(canvas, (x, y_top), (x + tw + 2, y_top + th + base + 2), colour, -1)
    cv2.putText(
        canvas, text, (x + 1, y_top + th + 1), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1,
        cv2.LINE_AA,
    )  # fmt: skip


def _draw_skeleton(
    canvas: np.ndarray, joints: np.ndarray, threshold: float, thickness: int
) -> None:
    visible = joints[:, 2] > threshold
    for a, b in POSE_SKELETON:
        if visible[a] and visible[b]:
            pa = (int(round(joints[a, 0])), int(round(joints[a, 1])))
            pb = (int(round(joints[b, 0])), int(round(joints[b, 1])))
            cv2.line(canvas, pa, pb, (0, 255, 128), thickness, cv2.LINE_AA)
    for x, y, _ in joints[visible]:
        cv2.circle(canvas, (int(round(x)), int(round(y))), thickness + 1, (255, 64, 0), -1)


def draw_tags(canvas: np.ndarray, tags: Tensor, scores: Tensor | None = None) -> None:
    """Write the weather / scene / time-of-day predictions in the top-left corner."""
    values = _np(tags).astype(int)
    confidences = _np(scores) if scores is not None else None
    lines = []
    for k, (attribute, names) in enumerate(TAG_ATTRIBUTES.items()):
        index = int(values[k])
        name = names[index] if 0 <= index < len(names) else "?"
        suffix = f" ({confidences[k]:.2f})" if confidences is not None else ""
        lines.append(f"{attribute}: {name}{suffix}")
    scale = _text_scale(canvas) * 1.1
    y = 4
    for line in lines:
        (tw, th), base = cv2.getTextSize(line, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
        cv2.rectangle(canvas, (2, y), (6 + tw, y + th + base + 2), (0, 0, 0), -1)
        cv2.putText(
            canvas, line, (4, y + th + 1), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1,
            cv2.LINE_AA,
        )  # fmt: skip
        y += th + base + 4


DISPLAY_SCORE = 0.5  # overlays draw detections from this score on (files keep them all)
LEGEND_MIN_AREA = 0.002  # a class map's class is listed in the legend from this area fraction on
DISPLAY_WIDTH = 960  # narrower frames are drawn upscaled by a whole factor, to about this width


def display_scale(width: int, target: int = DISPLAY_WIDTH) -> int:
    """The whole upscaling factor that brings a frame `width` pixels wide near `target`."""
    return max(1, round(target / max(1, width)))


def upscale(picture: np.ndarray, scale: int) -> np.ndarray:
    """Each pixel as a `scale` x `scale` block (predictions stay pixel-exact, nothing is smoothed)."""
    if scale == 1:
        return picture
    return np.repeat(np.repeat(picture, scale, axis=0), scale, axis=1)


Trails = Mapping[int, Sequence[tuple[float, float]]]  # track id -> points, original pixels


def draw_trails(canvas: np.ndarray, trails: Trails, scale: int = 1) -> None:
    """In place: each track's points (original pixels, oldest first) as a polyline in the
    track's colour (`instance_colour(track id)`) on the `scale`-times canvas."""
    thickness = max(1, round(min(canvas.shape[:2]) / 300))
    for ident, points in trails.items():
        if len(points) < 2:
            continue
        line = np.array([[round(x * scale), round(y * scale)] for x, y in points], dtype=np.int32)
        cv2.polylines(canvas, [line], False, instance_colour(int(ident)), thickness, cv2.LINE_8)


def draw_overlay(
    image: np.ndarray,
    prediction: FramePrediction,
    score_threshold: float = DISPLAY_SCORE,
    scale: int = 1,
    trails: Trails | None = None,
) -> np.ndarray:
    """One RGB picture with every predicted task drawn on `image` (H, W, 3 uint8, original
    size), `scale` times larger; boxes, masks and poses scoring below `score_threshold` are not
    drawn (they stay in the prediction files and count for AP). `trails` (track id -> recent
    box-bottom-centre points in original pixels) are drawn under the boxes as polylines in the
    tracks' colours."""
    canvas = np.ascontiguousarray(image.copy())
    if prediction.semantic is not None:
        draw_class_map(canvas, _np(prediction.semantic), SEMANTIC_PALETTE, 0.45, skip=())
    if prediction.drivable is not None:
        draw_class_map(canvas, _np(prediction.drivable), DRIVABLE_PALETTE, 0.45, skip=(2,))
    if prediction.lanes is not None:
        draw_class_map(canvas, _np(prediction.lanes)[0], LANE_PALETTE, 0.9, skip=(0,))
    canvas = np.ascontiguousarray(upscale(canvas, scale))
    if trails:
        draw_trails(canvas, trails, scale)
    for instances in (prediction.instances, prediction.detections, prediction.poses):
        if instances is not None and len(instances):
            draw_instances(canvas, instances, score_threshold=score_threshold, scale=scale)
            break
    drawn_boxes = prediction.instances is not None or prediction.detections is not None
    if prediction.poses is not None and len(prediction.poses) and drawn_boxes:
        draw_instances(
            canvas, prediction.poses, score_threshold=score_threshold, with_boxes=False,
            scale=scale,
        )  # fmt: skip
    if prediction.tags is not None:
        draw_tags(canvas, prediction.tags, prediction.tag_scores)
    return canvas


def legend_entries(
    prediction: FramePrediction, score_threshold: float = DISPLAY_SCORE
) -> list[tuple[str, tuple[int, int, int]]]:
    """(name, colour) of what the overlay shows: semantic classes by area, drivable and lane
    classes present (from `LEGEND_MIN_AREA` of the frame on; lanes, thin, from one pixel), the classes of the boxes drawn (at or above `score_threshold`)."""
    entries: list[tuple[str, tuple[int, int, int]]] = []

    def present(
        labels: np.ndarray, names: Sequence[str], palette: np.ndarray, skip: int | None,
        min_area: float = LEGEND_MIN_AREA,
    ) -> None:  # fmt: skip
        ids, counts = np.unique(labels, return_counts=True)
        keep = counts >= min_area * labels.size  # specks are not worth a legend entry
        ids, counts = ids[keep], counts[keep]
        for i in ids[np.argsort(-counts, kind="stable")]:
            if i != skip and 0 <= i < min(len(names), len(palette)):
                entries.append((names[i], tuple(int(c) for c in palette[i])))

    if prediction.semantic is not None:
        present(_np(prediction.semantic).astype(int), SEMANTIC_CLASSES, SEMANTIC_PALETTE, None)
    if prediction.drivable is not None:
        names = [f"drivable: {n}" for n in DRIVABLE_CLASSES]
        present(_np(prediction.drivable).astype(int), names, DRIVABLE_PALETTE, 2)
    if prediction.lanes is not None:
        names = [f"lane: {n}" for n in LANE_CATEGORIES]
        present(_np(prediction.lanes)[0].astype(int) - 1, names, LANE_PALETTE[1:], -1, 0.0)
    boxes = prediction.instances if prediction.instances is not None else prediction.detections
    if boxes is not None and len(boxes):
        scores = _np(boxes.scores) if boxes.scores is not None else np.ones(len(boxes))
        for cls in sorted({int(c) for c in _np(boxes.classes)[scores >= score_threshold]}):
            name = DETECTION_CLASSES_10[cls] if 0 <= cls < len(DETECTION_CLASSES_10) else str(cls)
            entries.append((f"box: {name}", tuple(int(c) for c in THING_PALETTE[cls % 10])))
    return entries


def with_legend(
    canvas: np.ndarray, entries: Sequence[tuple[str, tuple[int, int, int]]]
) -> np.ndarray:
    """`canvas` with a strip below it: a colour swatch and a name per entry, in rows."""
    if not entries:
        return canvas
    width = canvas.shape[1]
    scale = _text_scale(canvas)
    (_, th), base = cv2.getTextSize("Ag", cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    row_h, pad, swatch = th + base + 8, 6, th + base
    placed, x, y = [], pad, pad
    for name, colour in entries:
        tw = cv2.getTextSize(name, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)[0][0]
        item_w = swatch + 4 + tw + 2 * pad
        if x > pad and x + item_w > width:
            x, y = pad, y + row_h
        placed.append((x, y, name, colour))
        x += item_w
    strip = np.full((y + row_h + pad, width, 3), 24, dtype=np.uint8)
    for x, y, name, colour in placed:
        cv2.rectangle(strip, (x, y), (x + swatch, y + swatch), colour, -1)
        cv2.rectangle(strip, (x, y), (x + swatch, y + swatch), (200, 200, 200), 1)
        cv2.putText(
            strip, name, (x + swatch + 4, y + th + 1), cv2.FONT_HERSHEY_SIMPLEX, scale,
            (235, 235, 235), 1, cv2.LINE_AA,
        )  # fmt: skip
    return np.ascontiguousarray(np.vstack([canvas, strip]))


def colorize_depth(depth: np.ndarray, max_depth: float | None = None) -> np.ndarray:
    """Depth in metres -> RGB (near bright, far dark, invalid black), inverse-depth scaled."""
    valid = depth > 0
    inverse = np.zeros_like(depth, dtype=np.float32)
    inverse[valid] = 1.0 / depth[valid]
    top = 1.0 / max(1e-3, float(np.min(depth[valid]))) if valid.any() else 1.0
    if max_depth is not None:
        inverse = np.where(depth > max_depth, 0.0, inverse)
    scaled = np.clip(inverse / top * 255.0, 0, 255).astype(np.uint8)
    coloured = cv2.applyColorMap(scaled, cv2.COLORMAP_MAGMA)[..., ::-1]
    coloured[~valid] = 0
    return np.ascontiguousarray(coloured)


def draw_panels(
    image: np.ndarray, prediction: FramePrediction, scale: int = 1
) -> dict[str, np.ndarray]:
    """One RGB picture per predicted task, keyed by task name (for `predict --panels`), each
    `scale` times the frame's size."""
    panels: dict[str, np.ndarray] = {}
    if prediction.semantic is not None:
        panels["semantic"] = SEMANTIC_PALETTE[np.clip(_np(prediction.semantic), 0, 18)]
    if prediction.drivable is not None:
        canvas = image.copy()
        draw_class_map(canvas, _np(prediction.drivable), DRIVABLE_PALETTE, 0.6, skip=(2,))
        panels["drivable"] = canvas
    if prediction.lanes is not None:
        canvas = (image * 0.4).astype(np.uint8)
        draw_class_map(canvas, _np(prediction.lanes)[0], LANE_PALETTE, 1.0, skip=(0,))
        panels["lanes"] = canvas
    if prediction.depth is not None:
        panels["depth"] = colorize_depth(_np(prediction.depth))
    if prediction.normals is not None:
        normals = _np(prediction.normals).transpose(1, 2, 0)
        panels["normals"] = np.clip((normals + 1.0) * 127.5, 0, 255).astype(np.uint8)
    if prediction.edges is not None:
        edges = np.clip(_np(prediction.edges) * 255.0, 0, 255).astype(np.uint8)
        panels["edges"] = np.repeat(edges[..., None], 3, axis=2)
    for name, value in prediction.extras.items():
        spec = FIELDS.get(name) if name in FIELDS else None
        if spec is not None and spec.is_dense and spec.visual is not None:
            panels[name] = field_panel(_np(value), spec.visual)
    panels = {name: np.ascontiguousarray(upscale(p, scale)) for name, p in panels.items()}
    for name, instances in (
        ("detection", prediction.detections),
        ("instance", prediction.instances),
        ("pose", prediction.poses),
    ):
        if instances is not None:
            canvas = np.ascontiguousarray(upscale(image, scale))
            with_boxes = name != "pose" or instances.masks is None
            draw_instances(canvas, instances, with_boxes=with_boxes, scale=scale)
            panels[name] = canvas
    if prediction.tags is not None:
        canvas = np.ascontiguousarray(upscale(image, scale))
        draw_tags(canvas, prediction.tags, prediction.tag_scores)
        panels["tagging"] = canvas
    return panels


def field_panel(value: np.ndarray, visual: str) -> np.ndarray:
    """RGB picture of a plug-in field's map by its declared `visual`: `classes` (ids coloured by
    the instance palette, 0 black), `scalar` (min..max on a colour map) or `vector` (first three
    channels in -1..1 as RGB)."""
    if visual == "classes":
        ids = value.astype(np.int64)
        out = np.stack([instance_colour(int(i)) for i in range(int(ids.max()) + 1)])[ids]
        out[ids == 0] = 0
        return out.astype(np.uint8)
    if visual == "scalar":
        low, high = float(np.min(value)), float(np.max(value))
        scaled = (value - low) / (high - low) if high > low else np.zeros_like(value)
        coloured = cv2.applyColorMap((scaled * 255).astype(np.uint8), cv2.COLORMAP_VIRIDIS)
        return np.ascontiguousarray(coloured[..., ::-1])
    vectors = np.moveaxis(value[:3], 0, -1)
    return np.clip((vectors + 1.0) * 127.5, 0, 255).astype(np.uint8)


def _colour_wheel() -> np.ndarray:
    """The Middlebury flow colour wheel (Baker et al. 2011): [55, 3] RGB in 0..255, hues red ->
    yellow -> green -> cyan -> blue -> magenta in 15, 6, 4, 11, 13, 6 steps."""
    segments = ((15, 0, 1, True), (6, 1, 0, False), (4, 1, 2, True), (11, 2, 1, False),
                (13, 2, 0, True), (6, 0, 2, False))  # fmt: skip  # (steps, full, ramp, rising)
    rows = []
    for steps, full, ramp, rising in segments:
        block = np.zeros((steps, 3))
        block[:, full] = 255
        ramp_values = np.floor(255 * np.arange(steps) / steps)
        block[:, ramp] = ramp_values if rising else 255 - ramp_values
        rows.append(block)
    return np.concatenate(rows)


COLOUR_WHEEL = _colour_wheel()


def flow_to_color(flow: np.ndarray | Tensor) -> np.ndarray:
    """Flow [2, H, W] (pixels) -> RGB uint8 [H, W, 3] on the Middlebury colour wheel.

    Vectors are divided by the frame's largest magnitude: the hue is the direction (+x red),
    the saturation the relative magnitude (zero flow white, the largest vector the wheel's full
    colour); non-finite vectors count as zero. As the reference code (`flow_vis`, Baker et al.)."""
    u, v = (np.nan_to_num(np.asarray(c, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
            for c in _np(flow))  # fmt: skip
    radius = np.sqrt(u**2 + v**2)
    top = float(radius.max()) if radius.size else 0.0
    u, v, radius = u / (top + 1e-5), v / (top + 1e-5), radius / (top + 1e-5)
    count = len(COLOUR_WHEEL)
    angle = np.arctan2(-(v + 0.0), -u) / np.pi  # +x: -1 (wheel start); v + 0.0 drops a -0.0
    position = (angle + 1.0) / 2.0 * (count - 1)
    k0 = np.floor(position).astype(np.int64)
    k1 = (k0 + 1) % count
    f = (position - k0)[..., None]
    colour = ((1 - f) * COLOUR_WHEEL[k0] + f * COLOUR_WHEEL[k1]) / 255.0
    inside = radius <= 1
    colour[inside] = 1 - radius[inside, None] * (1 - colour[inside])
    colour[~inside] *= 0.75
    return np.floor(255 * colour).astype(np.uint8)
