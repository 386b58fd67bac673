"""Captions of labelled frames: exact strings for hand-built frames."""

from __future__ import annotations

import torch

from drivemtl.data.captions import caption, listing, plural, tag_phrase
from drivemtl.structures.bdd import IGNORE_INDEX, SCENE, SEMANTIC_CLASSES, TIMEOFDAY, WEATHER
from drivemtl.structures.instances import Instances
from drivemtl.structures.sample import Sample, SampleMeta

CLASSES = ("pedestrian", "car", "bus", "traffic sign")


def _sample(tasks: set[str], ignore: bool = False) -> Sample:
    semantic = torch.full((10, 10), SEMANTIC_CLASSES.index("road"))
    semantic[:3] = SEMANTIC_CLASSES.index("sky")  # 30 px
    semantic[3, :1] = SEMANTIC_CLASSES.index("pole")  # 1 px: under 2 %
    semantic[9] = IGNORE_INDEX  # ignored pixels do not count
    boxes = torch.tensor([[0, 0, 1, 1]] * 5, dtype=torch.float32)
    instances = Instances(
        boxes=boxes,
        classes=torch.tensor([1, 2, 1, 0, 3]),
        ignore=torch.tensor([False, False, False, False, ignore]),
    )
    tags = torch.tensor([WEATHER.index("rainy"), SCENE.index("city street"),
                         TIMEOFDAY.index("night")])  # fmt: skip
    meta = SampleMeta(name="f.jpg", image_set="s", orig_size=(10, 10))
    return Sample(torch.zeros(3, 10, 10), meta, frozenset(tasks), instances=instances,
                  semantic=semantic, tags=tags)  # fmt: skip


def test_caption_of_a_fully_labelled_frame() -> None:
    sample = _sample({"tagging", "detection", "semantic"})
    assert caption(sample, CLASSES) == (
        "a city street photo at night in rainy weather with 2 cars, a pedestrian, a bus and "
        "a traffic sign; road and sky."
    )


def test_caption_uses_only_the_labels_the_frame_carries() -> None:
    assert caption(_sample({"semantic"}), CLASSES) == "a street photo; road and sky."
    assert caption(_sample({"detection"}, ignore=True), CLASSES) == (
        "a street photo with 2 cars, a pedestrian and a bus."
    )


def test_phrases() -> None:
    assert plural("ambulance", 1) == "an ambulance" and plural("bus", 3) == "3 buses"
    assert listing(["a"]) == "a" and listing(["a", "b", "c"]) == "a, b and c"
    undefined = torch.tensor(
        [WEATHER.index("undefined"), IGNORE_INDEX, TIMEOFDAY.index("dawn/dusk")]
    )
    assert tag_phrase(undefined) == "a street photo at dawn or dusk"
