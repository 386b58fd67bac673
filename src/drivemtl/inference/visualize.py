"""Draw every predicted task onto a frame in one overlay (VTDNet-figure style), or as panels."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
from torch import Tensor

from drivemtl.structures.bdd import DETECTION_CLASSES_10, POSE_SKELETON, TAG_ATTRIBUTES
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
) -> None:
    """Masks (tinted, outlined), boxes with class and score, and pose skeletons, in place."""
    boxes = _np(instances.boxes)
    classes = _np(instances.classes).astype(int)
    scores = _np(instances.scores) if instances.scores is not None else np.ones(len(boxes))
    track_ids = _np(instances.track_ids) if instances.track_ids is not None else None
    masks = _np(instances.masks) if instances.masks is not None else None
    keypoints = _np(instances.keypoints) if instances.keypoints is not None else None
    height, width = canvas.shape[:2]
    thickness = max(1, round(min(height, width) / 300))
    for i in np.argsort(scores, kind="stable"):
        if scores[i] < score_threshold:
            continue
        ident = int(track_ids[i]) if track_ids is not None and track_ids[i] >= 0 else int(i)
        cls = int(classes[i])
        colour = tuple(int(c) for c in THING_PALETTE[cls % len(THING_PALETTE)])
        if masks is not None and len(masks):
            mask = masks[i].astype(bool)
            tint = np.array(instance_colour(ident), dtype=np.uint8)
            _blend(canvas, mask, tint, 0.45)
            contours, _ = cv2.findContours(
                mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE
            )
            cv2.drawContours(canvas, contours, -1, tuple(int(c) for c in tint), thickness)
        if with_boxes:
            x1, y1, x2, y2 = (int(round(v)) for v in boxes[i])
            cv2.rectangle(canvas, (x1, y1), (x2, y2), colour, thickness)
            name = class_names[cls] if 0 <= cls < len(class_names) else str(cls)
            text = f"{name} {scores[i]:.2f}" if instances.scores is not None else name
            if track_ids is not None and track_ids[i] >= 0:
                text = f"#{int(track_ids[i])} {text}"
            _label(canvas, text, (x1, max(y1, 0)), colour)
        if keypoints is not None and len(keypoints):
            _draw_skeleton(canvas, keypoints[i], keypoint_threshold, thickness)


def _label(canvas: np.ndarray, text: str, corner: tuple[int, int], colour: tuple[int, ...]) -> None:
    scale = max(0.3, canvas.shape[0] / 1200)
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
    scale = max(0.35, canvas.shape[0] / 1000)
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


def draw_overlay(
    image: np.ndarray, prediction: FramePrediction, score_threshold: float = DISPLAY_SCORE
) -> np.ndarray:
    """One RGB picture with every predicted task drawn on `image` (H, W, 3 uint8, original
    size); boxes, masks and poses scoring below `score_threshold` are not drawn (they stay in
    the prediction files and count for AP)."""
    canvas = np.ascontiguousarray(image.copy())
    if prediction.semantic is not None:
        draw_class_map(canvas, _np(prediction.semantic), SEMANTIC_PALETTE, 0.45, skip=())
    if prediction.drivable is not None:
        draw_class_map(canvas, _np(prediction.drivable), DRIVABLE_PALETTE, 0.45, skip=(2,))
    if prediction.lanes is not None:
        draw_class_map(canvas, _np(prediction.lanes)[0], LANE_PALETTE, 0.9, skip=(0,))
    for instances in (prediction.instances, prediction.detections, prediction.poses):
        if instances is not None and len(instances):
            draw_instances(canvas, instances, score_threshold=score_threshold)
            break
    drawn_boxes = prediction.instances is not None or prediction.detections is not None
    if prediction.poses is not None and len(prediction.poses) and drawn_boxes:
        draw_instances(canvas, prediction.poses, score_threshold=score_threshold, with_boxes=False)
    if prediction.tags is not None:
        draw_tags(canvas, prediction.tags, prediction.tag_scores)
    return canvas


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


def draw_panels(image: np.ndarray, prediction: FramePrediction) -> dict[str, np.ndarray]:
    """One RGB picture per predicted task, keyed by task name (for `predict --panels`)."""
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
    for name, instances in (
        ("detection", prediction.detections),
        ("instance", prediction.instances),
        ("pose", prediction.poses),
    ):
        if instances is not None:
            canvas = image.copy()
            draw_instances(canvas, instances, with_boxes=name != "pose" or instances.masks is None)
            panels[name] = canvas
    if prediction.depth is not None:
        panels["depth"] = colorize_depth(_np(prediction.depth))
    if prediction.normals is not None:
        normals = _np(prediction.normals).transpose(1, 2, 0)
        panels["normals"] = np.clip((normals + 1.0) * 127.5, 0, 255).astype(np.uint8)
    if prediction.edges is not None:
        edges = np.clip(_np(prediction.edges) * 255.0, 0, 255).astype(np.uint8)
        panels["edges"] = np.repeat(edges[..., None], 3, axis=2)
    if prediction.tags is not None:
        canvas = image.copy()
        draw_tags(canvas, prediction.tags, prediction.tag_scores)
        panels["tagging"] = canvas
    for name, value in prediction.extras.items():
        spec = FIELDS.get(name) if name in FIELDS else None
        if spec is not None and spec.is_dense and spec.visual is not None:
            panels[name] = field_panel(_np(value), spec.visual)
    return {name: np.ascontiguousarray(panel) for name, panel in panels.items()}


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
