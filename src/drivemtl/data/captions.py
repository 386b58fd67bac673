"""Captions of labelled frames: text made from a frame's tags, objects and stuff classes.

They stand in for web captions when a CLIP-shaped model is pretrained contrastively on a labelled
image pool (e.g. the synthetic world): "a city street photo at night in rainy weather with 3 cars,
a pedestrian and a traffic sign; road, building and sky." Only labels the frame carries are used
(tags with `tagging`, objects with `detection` / `instance`, stuff with `semantic`), so a caption
says nothing false about what it leaves out.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import torch

from drivemtl.structures.bdd import (
    DETECTION_CLASSES_10,
    IGNORE_INDEX,
    SEMANTIC_CLASSES,
    TAG_ATTRIBUTES,
)
from drivemtl.structures.sample import Sample

OBJECT_TASKS = ("detection", "instance", "mot", "mots")
TIME_WORDS = {"daytime": "in daytime", "night": "at night", "dawn/dusk": "at dawn or dusk"}


def plural(name: str, count: int) -> str:
    """`count` objects of class `name` in words: "a car", "an ambulance", "3 buses"."""
    if count == 1:
        return f"{'an' if name[0] in 'aeiou' else 'a'} {name}"
    return f"{count} {name}es" if name.endswith("s") else f"{count} {name}s"


def listing(items: Sequence[str]) -> str:
    """ "a", "a and b", "a, b and c"."""
    if len(items) <= 1:
        return "".join(items)
    return f"{', '.join(items[:-1])} and {items[-1]}"


def tag_phrase(tags: torch.Tensor | None) -> str:
    """ "a city street photo at night in rainy weather" from the (weather, scene, timeofday)
    tag indices; undefined or ignored tags are left out."""
    values = {}
    if tags is not None:
        for k, (attribute, names) in enumerate(TAG_ATTRIBUTES.items()):
            index = int(tags[k])
            if index != IGNORE_INDEX and 0 <= index < len(names) and names[index] != "undefined":
                values[attribute] = names[index]
    text = f"a {values['scene']} photo" if "scene" in values else "a street photo"
    if "timeofday" in values:
        text += f" {TIME_WORDS.get(values['timeofday'], 'at ' + values['timeofday'])}"
    if "weather" in values:
        text += f" in {values['weather']} weather"
    return text


def object_phrase(sample: Sample, class_names: Sequence[str]) -> str:
    """ "3 cars, a pedestrian and a traffic sign": the frame's labelled objects by count (most
    first, ties in class order); ignore regions are not objects."""
    instances = sample.instances
    if instances is None or not any(sample.has(t) for t in OBJECT_TASKS):
        return ""
    classes = instances.classes
    if instances.ignore is not None:
        classes = classes[~instances.ignore]
    counts = Counter(int(c) for c in classes)
    order = sorted(counts, key=lambda c: (-counts[c], c))
    return listing([plural(class_names[c], counts[c]) for c in order if 0 <= c < len(class_names)])


def stuff_phrase(
    sample: Sample, class_names: Sequence[str] = SEMANTIC_CLASSES, min_fraction: float = 0.02
) -> str:
    """ "road, building and sky": semantic classes covering at least `min_fraction` of the
    labelled pixels, largest first."""
    if sample.semantic is None or not sample.has("semantic"):
        return ""
    labels = sample.semantic[sample.semantic != IGNORE_INDEX].flatten().long()
    if labels.numel() == 0:
        return ""
    counts = torch.bincount(labels, minlength=len(class_names))[: len(class_names)]
    keep = [c for c in torch.argsort(counts, descending=True, stable=True).tolist()
            if counts[c] >= min_fraction * labels.numel()]  # fmt: skip
    return listing([class_names[c] for c in keep])


def caption(
    sample: Sample,
    object_classes: Sequence[str] = DETECTION_CLASSES_10,
    semantic_classes: Sequence[str] = SEMANTIC_CLASSES,
    min_fraction: float = 0.02,
) -> str:
    """The caption of one labelled frame (module docstring); `object_classes` names the
    instance class indices, `semantic_classes` the class map's."""
    text = tag_phrase(sample.tags if sample.has("tagging") else None)
    objects = object_phrase(sample, object_classes)
    if objects:
        text += f" with {objects}"
    stuff = stuff_phrase(sample, semantic_classes, min_fraction)
    if stuff:
        text += f"; {stuff}"
    return text + "."


__all__ = ["caption", "listing", "object_phrase", "plural", "stuff_phrase", "tag_phrase"]
