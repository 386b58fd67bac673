"""Pseudo labels merged into a frame's ground truth task by task, never replacing the whole frame.

A pseudo-label source gives one task's labels to frames that lack them (a teacher's predictions,
or another set's annotations). It has to add that task and leave every other task's ground truth
as it is, so the merge works on the Scalabel fields from which the BDD100K reader builds each
task's targets:

- tagging: the frame attributes named in TAG_ATTRIBUTES (weather, scene, timeofday);
- detection, mot, instance, mots: the frame's *objects*, labels that are neither lanes nor areas
  and carry a box2d, rle or poly2d (the reader's instances: box, category, id, mask);
- pose: the `graph` (keypoints) of person objects.

Lane and area labels and all other attributes always stay as the ground truth has them. Keypoints
belong to an object, so pose pseudo labels are attached to the frame's own objects (same class,
box IoU >= MATCH_IOU) rather than added as second copies of the same people: duplicated boxes would
corrupt detection, and a person that the ground truth does not box would be a false detection
target. Only in a set that has no object task are unmatched pose labels added as objects.
Instances the reader decodes from bitmask PNGs are not labels and are not merged here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from drivemtl.structures.bdd import DRIVABLE_CLASSES, LANE_CATEGORIES, TAG_ATTRIBUTES
from drivemtl.structures.scalabel import Frame, Label

OBJECT_TASKS: tuple[str, ...] = ("detection", "mot", "instance", "mots")
MATCH_IOU = 0.5

ClassOf = Callable[[Label], int | None]


def is_lane(label: Label) -> bool:
    """Whether a label is a lane marking (`lane/...`, or a lane category drawn as a polyline)."""
    name = label.category or ""
    return name.startswith("lane") or (name in LANE_CATEGORIES and bool(label.poly2d))


def is_area(label: Label) -> bool:
    """Whether a label is a drivable-area polygon (`area/...` or a drivable class name)."""
    name = label.category or ""
    return name.startswith("area/") or name in DRIVABLE_CLASSES or name == "drivable area"


def is_object(label: Label) -> bool:
    """Whether the reader turns a label into an instance (detection, tracking, masks, pose)."""
    if is_lane(label) or is_area(label):
        return False
    return label.box2d is not None or label.rle is not None or bool(label.poly2d)


def box_iou(a: Label, b: Label) -> float:
    """IoU of two labels' box2d (0 when either has none)."""
    if a.box2d is None or b.box2d is None:
        return 0.0
    p, q = a.box2d, b.box2d
    w = min(p.x2, q.x2) - max(p.x1, q.x1)
    h = min(p.y2, q.y2) - max(p.y1, q.y1)
    if w <= 0 or h <= 0:
        return 0.0
    union = (p.x2 - p.x1) * (p.y2 - p.y1) + (q.x2 - q.x1) * (q.y2 - q.y1) - w * h
    return w * h / union if union > 0 else 0.0


def match_objects(
    targets: Sequence[Label], sources: Sequence[Label], class_of: ClassOf
) -> dict[int, int]:
    """Greedy one-to-one matching, highest IoU first: target index -> source index.

    Pairs need the same (non-None) class and IoU >= MATCH_IOU.
    """
    pairs = []
    for i, target in enumerate(targets):
        cls = class_of(target)
        for j, source in enumerate(sources):
            iou = box_iou(target, source)
            if cls is not None and class_of(source) == cls and iou >= MATCH_IOU:
                pairs.append((iou, i, j))
    matched: dict[int, int] = {}
    used: set[int] = set()
    for _, i, j in sorted(pairs, key=lambda p: (-p[0], p[1], p[2])):
        if i not in matched and j not in used:
            matched[i] = j
            used.add(j)
    return matched


def _without_graph(label: Label) -> Label:
    return label.model_copy(update={"graph": None}) if label.graph is not None else label


def merge_tags(gt: Frame, pseudo: Frame) -> Frame:
    """`gt` with the tag attributes taken from `pseudo` (a tag `pseudo` lacks becomes unknown)."""
    kept = {k: v for k, v in (gt.attributes or {}).items() if k not in TAG_ATTRIBUTES}
    tags = {k: v for k, v in (pseudo.attributes or {}).items() if k in TAG_ATTRIBUTES}
    return gt.model_copy(update={"attributes": {**kept, **tags} or None})


def pseudo_objects(pseudo: Frame, class_of: ClassOf) -> list[Label]:
    """The objects of a pseudo frame without keypoints, each object once.

    The pseudo-label writer lists a person twice when it labels detection and pose: a detection
    label and a pose label (box + graph). A graph-carrying label that matches a graph-less one is
    that object's pose label and is left out; any other object counts, its graph dropped.
    """
    objects = [label for label in pseudo.labels or [] if is_object(label)]
    plain = [label for label in objects if label.graph is None]
    posed = [label for label in objects if label.graph is not None]
    twins = set(match_objects(posed, plain, class_of))
    return plain + [_without_graph(label) for k, label in enumerate(posed) if k not in twins]


def merge_objects(gt: Frame, pseudo: Frame, keep_gt_poses: bool, class_of: ClassOf) -> Frame:
    """`gt` with its objects replaced by the objects of `pseudo` (lanes and areas kept).

    With `keep_gt_poses` (the set's pose labels stay ground truth) ground-truth objects carrying a
    graph are kept, and pseudo objects duplicating one of them are dropped.
    """
    labels = gt.labels or []
    others = [label for label in labels if not is_object(label)]
    new = pseudo_objects(pseudo, class_of)
    if not keep_gt_poses:
        return gt.model_copy(update={"labels": others + new})
    posed = [label for label in labels if is_object(label) and label.graph is not None]
    duplicates = set(match_objects(new, posed, class_of))
    new = [label for k, label in enumerate(new) if k not in duplicates]
    return gt.model_copy(update={"labels": others + posed + new})


def merge_poses(gt: Frame, pseudo: Frame, add_unmatched: bool, class_of: ClassOf) -> Frame:
    """`gt` with every object's graph replaced by the graph of the matching pose label of `pseudo`.

    Objects without a match get no keypoints. Unmatched pose labels are added as objects only with
    `add_unmatched` (a set without object tasks, whose only objects are these people).
    """
    labels = [_without_graph(label) if is_object(label) else label for label in gt.labels or []]
    poses = [label for label in pseudo.labels or [] if is_object(label) and label.graph is not None]
    objects = [k for k, label in enumerate(labels) if is_object(label)]
    matched = match_objects([labels[k] for k in objects], poses, class_of)
    for i, j in matched.items():
        labels[objects[i]] = labels[objects[i]].model_copy(update={"graph": poses[j].graph})
    if add_unmatched:
        used = set(matched.values())
        labels += [pose for j, pose in enumerate(poses) if j not in used]
    return gt.model_copy(update={"labels": labels})


def merge_frame(
    gt: Frame, pseudo: Mapping[str, Frame], set_tasks: frozenset[str], class_of: ClassOf
) -> Frame:
    """`gt` with the labels of each pseudo-labelled task (task -> that source's frame) merged in.

    Objects are merged before poses so that pose labels attach to the final objects. The object
    tasks share one list of objects, so when several are pseudo-labelled the first of
    OBJECT_TASKS supplies it.
    """
    frame = gt
    object_task = next((t for t in OBJECT_TASKS if t in pseudo), None)
    if object_task is not None:
        keep_gt_poses = "pose" in set_tasks and "pose" not in pseudo
        frame = merge_objects(frame, pseudo[object_task], keep_gt_poses, class_of)
    if "pose" in pseudo:
        add_unmatched = not set_tasks & set(OBJECT_TASKS)
        frame = merge_poses(frame, pseudo["pose"], add_unmatched, class_of)
    if "tagging" in pseudo:
        frame = merge_tags(frame, pseudo["tagging"])
    return frame
